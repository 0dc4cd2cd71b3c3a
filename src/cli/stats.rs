//! `charla admin stats`

use super::{
    client::{AdminClient, Failure},
    output::{self, JsonFlag},
};

pub(super) async fn run(client: &AdminClient, json: JsonFlag) -> Result<(), Failure> {
    let stats = client.get(&["stats"], &[]).await?;
    output::print(json, &stats, |s| {
        output::fields(
            s,
            &[
                "users",
                "rooms",
                "messages_today",
                "agents_online",
                "open_tickets",
            ],
        );
        if let Some(by_status) = s["conversations"].as_object() {
            for (status, count) in by_status {
                println!("conversations {status}: {count}");
            }
        }
    })
}
