//! What administrators do to accounts and rooms, across the services it takes, each change
//! written to the audit log with who asked. The admin API (`api/admin`) calls these; so do
//! Synapse's admin endpoints, in Synapse's shapes.

mod accounts;
mod appservices;
mod stats;

pub(crate) use accounts::{AccountChange, NewUser};
pub(crate) use appservices::ensure_appservice_user;
pub(crate) use stats::Stats;

use ruma::RoomId;

use crate::{
    error::Result,
    rooms::{Deleted, RoomService},
    stream::Stream,
    support::{Desk, actor::Actor},
    users::UserService,
};

/// The services administration uses, built per request by `Services::admin`.
#[derive(Clone, Copy)]
pub(crate) struct Admin<'a> {
    pub(crate) users: &'a UserService,
    pub(crate) rooms: &'a RoomService,
    /// Where the stream is: an appservice registered now is sent what comes after.
    pub(crate) stream: &'a Stream,
    /// The desk: its audit log, roles, conversations and tickets (and the appservices).
    pub(crate) desk: Desk<'a>,
    /// A deleted room's documents leave the search index.
    pub(crate) search: &'a crate::search::SearchService,
}

impl Admin<'_> {
    /// Deletes a room (`rooms::admin`): its members leave, nobody joins again, its history is
    /// purged. Answers what was done and the audit entry recording it (Synapse's `delete_id`).
    pub(crate) async fn delete_room(
        &self,
        actor: &Actor<'_>,
        room_id: &RoomId,
    ) -> Result<(Deleted, Option<u64>)> {
        // A conversation is closed first, while its room still takes the bot's state event:
        // otherwise it would stay open in the desk's lists and count in its agent's load.
        if self.desk.support.index.contains(room_id)? {
            self.rooms.live_room(room_id)?;
            let details = serde_json::json!({ "reason": "room deleted" });
            crate::support::actions::close(&self.desk, room_id, actor, details).await?;
        }
        let deleted = self.rooms.delete_room(room_id).await?;
        self.search.forget_room(room_id);
        let entry = self
            .desk
            .support
            .audit
            .write_numbered(
                actor,
                "room.delete",
                room_id.as_str(),
                serde_json::to_value(&deleted)
                    .map_err(|e| crate::error::Error::internal(e.to_string()))?,
            )
            .await?;
        Ok((deleted, entry))
    }
}
