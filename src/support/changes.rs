//! The desk's change lock.
//!
//! Conversation state and records are read, changed and written back (two agents adding a label
//! at once must both be kept; an agent's load is counted before a conversation is given to
//! them). Those read-modify-write steps run under one lock, and the functions that must only
//! run under it take its guard as a parameter: a [`ChangeGuard`] can only come from
//! [`Changes::lock`], so the compiler checks that their callers hold it.

/// The lock; one per desk.
#[derive(Default)]
pub(crate) struct Changes(tokio::sync::Mutex<()>);

/// Proof that the caller holds the desk's change lock.
pub(crate) struct ChangeGuard<'a> {
    _held: tokio::sync::MutexGuard<'a, ()>,
}

impl Changes {
    pub(crate) async fn lock(&self) -> ChangeGuard<'_> {
        ChangeGuard {
            _held: self.0.lock().await,
        }
    }
}
