//! Shared run context and setup helpers (account creation, bounded fan-out).
//!
//! Setup is not measured, but it can dominate wall time (1000 registrations
//! hash 1000 passwords on the server), so it fans out with a fixed concurrency
//! bound: enough to keep a two-core server busy without opening thousands of
//! sockets at once or tripping connection limits.

use super::client::{ApiError, BoxError, Homeserver, http_client, retry_429};
use super::session::Session;
use futures_util::{StreamExt, TryStreamExt, stream};
use std::future::Future;

/// How many setup requests (registrations, joins, initial syncs) run at once.
pub const SETUP_CONCURRENCY: usize = 32;

/// How many bench users share one `reqwest::Client` (one connection pool).
/// Spreading users over several pools avoids any single pool's lock becoming
/// the tool's own bottleneck when a thousand long-polls are open.
pub const USERS_PER_POOL: usize = 64;

/// Everything the scenarios share for one run.
pub struct Ctx {
    homeservers: Vec<Homeserver>,
    /// Unique per run; prefixes every username so runs never collide.
    pub prefix: String,
    password: String,
    registration_token: Option<String>,
}

impl Ctx {
    /// Builds one connection pool per [`USERS_PER_POOL`] of the largest user
    /// population any scenario will need (`max_users`).
    pub fn new(
        base: &str,
        max_users: usize,
        prefix: String,
        registration_token: Option<String>,
    ) -> Result<Ctx, BoxError> {
        let pools = max_users.div_ceil(USERS_PER_POOL).max(1);
        let first = Homeserver::new(base, http_client()?)?;
        let mut homeservers = vec![first.clone()];
        for _ in 1..pools {
            homeservers.push(first.with_http(http_client()?));
        }
        Ok(Ctx {
            homeservers,
            password: format!("bench-pw-{prefix}"),
            prefix,
            registration_token,
        })
    }

    /// The password every bench user is registered with (to log in again).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The homeserver handle (connection pool) for the `i`th user of a role.
    pub fn homeserver(&self, i: usize) -> &Homeserver {
        &self.homeservers[(i / USERS_PER_POOL) % self.homeservers.len()]
    }

    /// Registers user `{prefix}-{role}-{i}`, retrying on rate limits.
    pub async fn register(&self, role: &str, i: usize) -> Result<Session, ApiError> {
        let username = format!("{}-{role}-{i}", self.prefix);
        let hs = self.homeserver(i);
        retry_429(|| {
            hs.register(
                &username,
                &self.password,
                self.registration_token.as_deref(),
            )
        })
        .await
    }

    /// Registers `n` users of one role, [`SETUP_CONCURRENCY`] at a time,
    /// returned in index order.
    pub async fn register_many(&self, role: &str, n: usize) -> Result<Vec<Session>, BoxError> {
        let users = bounded(n, SETUP_CONCURRENCY, |i| self.register(role, i)).await?;
        Ok(users)
    }
}

/// Runs `f(0..n)` with at most `concurrency` futures in flight, preserving
/// order, and stops at the first error.
///
/// The futures are polled by the calling task rather than spawned: setup work
/// is I/O bound on the server side, so the tool's own CPU use here is tiny.
pub async fn bounded<T, F, Fut>(n: usize, concurrency: usize, f: F) -> Result<Vec<T>, ApiError>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    stream::iter(0..n)
        .map(f)
        .buffered(concurrency.max(1))
        .try_collect()
        .await
}

/// Prints a progress line to stderr, keeping stdout for the results table and
/// JSON so they can be piped.
pub fn progress(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

/// A short random lowercase prefix (valid in Matrix localparts) so repeated
/// runs against the same server never reuse usernames.
pub fn random_prefix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let tail: String = (0..6)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("bench{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_a_valid_localpart() {
        let p = random_prefix();
        assert_eq!(p.len(), 11);
        assert!(
            p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
    }

    #[tokio::test]
    async fn bounded_keeps_order_and_stops_on_error() {
        let ok = bounded(10, 3, |i| async move { Ok::<_, ApiError>(i * 2) }).await;
        assert_eq!(ok.unwrap(), (0..10).map(|i| i * 2).collect::<Vec<_>>());
        let err = bounded(10, 3, |i| async move {
            if i == 4 {
                Err(ApiError {
                    status: Some(500),
                    errcode: None,
                    message: "boom".into(),
                    retry_after_ms: None,
                    timeout: false,
                })
            } else {
                Ok(i)
            }
        })
        .await;
        assert_eq!(err.unwrap_err().status, Some(500));
    }
}
