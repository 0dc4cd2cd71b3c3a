//! The sender: one transaction in flight per appservice, retried with backoff until the
//! appservice acknowledges it with a 2xx; only then does the cursor move.

use std::time::Duration;

use super::{
    Pushers,
    state::{PendingTxn, Shared},
};
use crate::{
    appservice::{AppService, outbound},
    stream::Backoff,
};

const RETRY: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(300));

/// Sends the prepared transactions in order until the server stops.
pub(super) async fn run(p: &Pushers<'_>, asv: &AppService, shared: &Shared) {
    let http = outbound::client();
    let mut retry = RETRY;
    loop {
        let Some(txn) = shared.front() else {
            tokio::select! {
                () = shared.prepared.notified() => continue,
                () = p.notifier.stopped() => return,
            }
        };
        if let Err(e) = send(&http, asv, &txn).await {
            let wait = retry.next_wait();
            tracing::warn!(appservice = asv.id(), txn = txn.txn_id, error = %e, retry_in = ?wait, "transaction failed");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                // A successful ping: the appservice is back, the backlog goes at once.
                () = asv.reachable.notified() => retry.reset(),
                () = p.notifier.stopped() => return,
            }
            continue;
        }
        retry.reset();
        if let Err(e) = shared.acknowledge(p.store, asv, &txn) {
            tracing::error!(appservice = asv.id(), error = %e, "appservice pusher stopped");
            return;
        }
    }
}

async fn send(
    http: &reqwest::Client,
    asv: &AppService,
    txn: &PendingTxn,
) -> std::result::Result<(), String> {
    let url = outbound::endpoint(asv, &format!("transactions/{}", txn.txn_id)).ok_or("no url")?;
    let res = http
        .put(url)
        .bearer_auth(&asv.registration.hs_token)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(txn.body.clone())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if res.status().is_success() {
        Ok(())
    } else {
        Err(format!("status {}", res.status()))
    }
}
