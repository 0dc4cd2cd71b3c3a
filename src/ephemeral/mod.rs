//! What a room's members see besides its timeline: read receipts, typing and presence.
//!
//! Receipts are durable and numbered by the global stream like events. Typing and presence are
//! volatile: they live in memory, are numbered by the stream's ephemeral counter, and are gone
//! after a restart, as clients expect (a restarted server has nobody typing and, until they
//! sync again, nobody online).
//!
//! Each change is numbered *while the service's lock is held* and is visible under that same
//! lock, and a sync reads the counter before it reads the services: so a change a sync missed
//! always carries a number above the token that sync returns.

mod presence;
mod receipts;
mod typing;

pub use presence::PresenceService;
pub(crate) use presence::co_members;
pub(crate) use receipts::ReceiptKind;
pub use receipts::ReceiptService;
pub use typing::TypingService;
