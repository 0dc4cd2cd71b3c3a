//! `admin.token`: the credential of whoever runs the server.
//!
//! `charla serve` writes a random token into `<storage.path>/admin.token` (mode 0600) on first
//! start; it authenticates as a server administrator on the admin API, which is how
//! `charla admin` works without an account. Whoever can read the data folder owns the server
//! anyway (the store is there), so the file adds no new way in. Only the token's SHA-256 stays in
//! memory, and requests are compared against it in constant time.

use std::path::Path;

use subtle::ConstantTimeEq;

use super::tokens::{TokenHash, hash};
use crate::error::Result;

/// The file in the data folder.
pub(crate) const ADMIN_TOKEN_FILE: &str = "admin.token";

pub(crate) struct AdminToken {
    hash: TokenHash,
}

impl AdminToken {
    /// Reads `<data>/admin.token`, creating it when absent.
    pub(crate) fn open(data: &Path) -> Result<Self> {
        let token =
            crate::secret_file::read_or_create(&data.join(ADMIN_TOKEN_FILE), "the admin token")?;
        Ok(AdminToken { hash: hash(&token) })
    }

    /// Whether a request's bearer token is the admin token.
    pub(crate) fn matches(&self, token: &str) -> bool {
        hash(token).ct_eq(&self.hash).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_created_once_privately_and_only_it_matches() {
        let dir = tempfile::tempdir().unwrap();
        let first = AdminToken::open(dir.path()).unwrap();
        let written = std::fs::read_to_string(dir.path().join(ADMIN_TOKEN_FILE)).unwrap();
        let token = written.trim();
        assert_eq!(token.len(), 32);
        assert!(first.matches(token));
        assert!(!first.matches(&token[..31]));
        assert!(!first.matches(""));
        let again = AdminToken::open(dir.path()).unwrap();
        assert!(again.matches(token), "a restart keeps the token");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(ADMIN_TOKEN_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
