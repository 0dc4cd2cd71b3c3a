//! How many long requests of one kind one user may have in progress at once: uploads, URL
//! previews being fetched.
//!
//! An upload lasts as long as its client takes to send it, a preview as long as the remote site
//! takes to answer, so without a bound one account could hold thousands of them (sockets,
//! temporary files, tasks). Each takes a slot for its user before any work starts and gives it
//! back when it ends however it ends (success, error, or the client going away, which drops
//! the request). A user at the limit gets `429 M_LIMIT_EXCEEDED` at once.

use std::collections::HashMap;

use http::StatusCode;
use parking_lot::Mutex;
use ruma::{OwnedUserId, UserId};
use serde_json::json;

use crate::error::{Error, Result};

/// What a refused request is told to wait: the others end at their own pace, so this is a hint
/// to retry soon, not a promise that a slot is free by then.
const RETRY_AFTER_MS: u64 = 1000;

/// Requests of one kind in progress, per user.
#[derive(Debug)]
pub struct UserSlots {
    max: usize,
    /// What the requests are, for the refusal: "uploads", "URL previews".
    what: &'static str,
    held: Mutex<HashMap<OwnedUserId, usize>>,
}

/// One request in progress; its slot is given back when this is dropped.
#[derive(Debug)]
pub struct UserSlot<'a> {
    slots: &'a UserSlots,
    user: OwnedUserId,
}

impl UserSlots {
    pub fn new(max: usize, what: &'static str) -> Self {
        UserSlots {
            max,
            what,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a slot for `user`, or refuses with `429 M_LIMIT_EXCEEDED` at the limit.
    pub fn acquire(&self, user: &UserId) -> Result<UserSlot<'_>> {
        // The map holds plain counts, consistent whatever a panicking holder did.
        let mut held = self.held.lock();
        let count = held.entry(user.to_owned()).or_insert(0);
        if *count >= self.max {
            return Err(Error::Matrix {
                status: StatusCode::TOO_MANY_REQUESTS,
                errcode: "M_LIMIT_EXCEEDED",
                message: format!(
                    "Too many {} in progress: at most {} at once per user",
                    self.what, self.max
                )
                .into(),
                extra: Some(json!({ "retry_after_ms": RETRY_AFTER_MS })),
            });
        }
        *count += 1;
        Ok(UserSlot {
            slots: self,
            user: user.to_owned(),
        })
    }

    /// Requests `user` has in progress.
    #[cfg(test)]
    fn held(&self, user: &UserId) -> usize {
        let held = self.held.lock();
        held.get(user).copied().unwrap_or(0)
    }
}

impl Drop for UserSlot<'_> {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock();
        if let Some(count) = held.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // Only users with uploads in progress take memory.
                held.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_per_user_and_come_back_on_drop() {
        let slots = UserSlots::new(2, "uploads");
        let alice: OwnedUserId = "@alice:localhost".try_into().unwrap();
        let bob: OwnedUserId = "@bob:localhost".try_into().unwrap();
        let a1 = slots.acquire(&alice).unwrap();
        let _a2 = slots.acquire(&alice).unwrap();
        let Err(Error::Matrix {
            status, errcode, ..
        }) = slots.acquire(&alice)
        else {
            panic!("a third upload was allowed");
        };
        assert_eq!((status.as_u16(), errcode), (429, "M_LIMIT_EXCEEDED"));
        let _b = slots.acquire(&bob).unwrap();
        drop(a1);
        assert_eq!(slots.held(&alice), 1);
        let _a3 = slots.acquire(&alice).unwrap();
        drop(_a3);
        drop(_a2);
        assert_eq!(slots.held(&alice), 0);
        assert!(!slots.held.lock().contains_key(&alice));
    }
}
