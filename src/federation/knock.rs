//! A local user knocking on a room of another server (spec v1.16, "Knocking upon a room"):
//! ask a resident server for a knock template (`make_knock`, naming the room versions this
//! server supports), sign it, send it (`send_knock`), and record the knock with the stripped
//! state the server answers, which the user's sync shows under `rooms.knock` until the room's
//! members invite them (their server's invite then replaces it) or not.

use reqwest::Method;
use serde_json::{Value, value::RawValue as RawJsonValue};

use super::{
    Federation,
    join::{MAX_TRIED, Member, bad_gateway, encode, peer_error},
};
use crate::{
    error::{Error, Result},
    events::rules_for,
    rooms::{RemoteJoin, RoomService},
};

/// The most stripped state events kept from a `send_knock` answer.
const MAX_STRIPPED: usize = 50;

impl Federation {
    /// Knocks through the first of `knock.via` that lets it.
    pub(crate) async fn knock_remote(
        &self,
        rooms: &RoomService,
        knock: RemoteJoin<'_>,
    ) -> Result<()> {
        let mut last_error = Error::not_found("No server to knock through");
        for server in knock
            .via
            .iter()
            .filter(|s| **s != self.server_name)
            .take(MAX_TRIED)
        {
            let (answer, version) = match self
                .template(server, "make_knock", knock.room_id, knock.user)
                .await
            {
                Ok(template) => template,
                Err(e) if matches!(e.errcode(), "M_FORBIDDEN" | "M_INCOMPATIBLE_ROOM_VERSION") => {
                    return Err(e);
                }
                Err(e) => {
                    last_error = e;
                    continue;
                }
            };
            let rules = rules_for(&version)?;
            let member = Member {
                room_id: knock.room_id,
                user: knock.user,
                profile: knock.profile,
                membership: "knock",
                reason: knock.reason,
            };
            let (event_id, event, _, _) = self.sign_membership(&answer, member, &rules)?;
            let path = format!(
                "/_matrix/federation/v1/send_knock/{}/{}",
                encode(knock.room_id.as_str()),
                encode(event_id.as_str()),
            );
            let body = serde_json::to_value(&event).map_err(|e| Error::internal(e.to_string()))?;
            let answer = match self
                .client
                .send_signed(server, Method::PUT, &path, Some(&body))
                .await
            {
                Ok(answer) => answer,
                Err(e) => {
                    tracing::info!(room_id = %knock.room_id, %server, error = %e, "knock refused");
                    last_error = peer_error(e);
                    continue;
                }
            };
            let stripped: Vec<Box<RawJsonValue>> = answer
                .get("knock_room_state")
                .and_then(Value::as_array)
                .ok_or_else(|| bad_gateway("send_knock answered without knock_room_state"))?
                .iter()
                .take(MAX_STRIPPED)
                .filter_map(|e| serde_json::value::to_raw_value(e).ok())
                .collect();
            let knock_event = self.verify_object(&rules, event, None).await?;
            return rooms
                .record_remote_membership(version, &knock_event, &stripped)
                .await;
        }
        Err(last_error)
    }
}
