//! The sender's stream consumer: queues each event this server created for the other servers
//! in its room, and turns local users' typing notices and read receipts into EDUs for them.

use std::{collections::BTreeSet, sync::Arc};

use ruma::{OwnedServerName, events::TimelineEventType};
use tokio::sync::broadcast;

use super::{SenderView, edus::EphemeralMapper, queue, run_workers};
use crate::{
    error::Result,
    rooms::{Loaded, member_target},
    storage::{Batch, Table},
    stream::{Commit, Consumer, Edu, Handler, NamedCursor},
};

const NAME: &str = "federation sender";
const CURSOR_KEY: &[u8] = b"cursor";

/// Starts the sender when federation is enabled: its consumer from its saved cursor (or the
/// stream's head, the first time), and the workers of destinations with a backlog. Call it
/// before the server serves, as every consumer's start.
pub(crate) async fn start<S>(services: Arc<S>, view: fn(&S) -> Option<SenderView<'_>>) -> Result<()>
where
    S: Send + Sync + 'static,
{
    let Some(v) = view(&services) else {
        return Ok(());
    };
    let cursor = NamedCursor::new(v.store, Table::FederationState, CURSOR_KEY);
    let from = Consumer::new(NAME, v.stream, v.notifier, &cursor)
        .start()
        .await?;
    for table in [Table::FederationQueue, Table::FederationEdus] {
        for destination in queue::destinations(v.store, table)? {
            v.federation.outbox.wake(&destination);
        }
    }
    for peer in super::peers::recent(v.store)? {
        v.federation.outbox.announce(&peer);
    }
    tokio::spawn(run_workers(services.clone(), view));
    tokio::spawn(async move {
        let Some(v) = view(&services) else { return };
        let cursor = NamedCursor::new(v.store, Table::FederationState, CURSOR_KEY);
        let handler = Enqueuer {
            v: &v,
            cursor: &cursor,
            writes: Batch::new(),
            woken: BTreeSet::new(),
            edus: v.notifier.subscribe_edus(),
            ephemeral: EphemeralMapper::default(),
        };
        Consumer::new(NAME, v.stream, v.notifier, &cursor)
            .run(from, v.rooms, handler)
            .await;
    });
    Ok(())
}

struct Enqueuer<'a> {
    v: &'a SenderView<'a>,
    cursor: &'a NamedCursor<'a>,
    writes: Batch,
    /// Destinations that got something in this batch, woken once it is durable.
    woken: BTreeSet<OwnedServerName>,
    edus: broadcast::Receiver<Arc<Edu>>,
    ephemeral: EphemeralMapper,
}

impl Handler for Enqueuer<'_> {
    type Event = Arc<Loaded>;

    async fn event(&mut self, pos: u64, event: Arc<Loaded>) -> Result<()> {
        let pdu = &event.pdu;
        let own = &self.v.federation.server_name;
        // Other servers' events reach the others from their origin.
        if pdu.sender.server_name() != own {
            return Ok(());
        }
        let room = self.v.rooms.room(&pdu.room_id)?;
        let mut destinations = self.v.rooms.servers_in_room(&room);
        // A member leaving, kicked or banned hears of it, though no longer in the room.
        if pdu.kind == TimelineEventType::RoomMember
            && let Some(target) = member_target(pdu)
        {
            destinations.push(target.server_name().to_owned());
        }
        destinations.sort_unstable();
        destinations.dedup();
        for destination in destinations.into_iter().filter(|d| d != own) {
            queue::put(&mut self.writes, &destination, pos);
            self.woken.insert(destination);
        }
        Ok(())
    }

    async fn commit(&mut self, upto: u64) -> Result<Commit> {
        if self.writes.is_empty() {
            return Ok(Commit::Lazy);
        }
        let mut batch = std::mem::take(&mut self.writes);
        self.cursor.put(&mut batch, upto);
        self.v.store.write_durable(batch).await?;
        for destination in std::mem::take(&mut self.woken) {
            self.v.federation.outbox.wake(&destination);
        }
        Ok(Commit::Saved)
    }

    /// Local users' typing notices and receipts, as they happen.
    async fn wait(&mut self) {
        match self.edus.recv().await {
            Ok(edu) => {
                let own = &self.v.federation.server_name;
                let Some(room_id) = &edu.room_id else {
                    // Presence: to the servers sharing a room with the user.
                    if let Some((user, out)) = EphemeralMapper::presence(own, &edu.event) {
                        let servers = crate::ephemeral::co_members(self.v.rooms, &user)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|u| u.server_name().to_owned())
                            .filter(|s| s != own)
                            .collect::<std::collections::BTreeSet<_>>();
                        for server in &servers {
                            self.v.federation.outbox.push_edu(server, out.clone());
                        }
                    }
                    return;
                };
                let Ok(room) = self.v.rooms.room(room_id) else {
                    return;
                };
                let servers: Vec<OwnedServerName> = self
                    .v
                    .rooms
                    .servers_in_room(&room)
                    .into_iter()
                    .filter(|s| s != own)
                    .collect();
                if servers.is_empty() {
                    return;
                }
                for out in self.ephemeral.map(own, room_id, &edu.event) {
                    for server in &servers {
                        self.v.federation.outbox.push_edu(server, out.clone());
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "federation sender: ephemeral events missed");
            }
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}
