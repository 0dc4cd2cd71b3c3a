//! Synapse-compatible shared-secret registration: the secret, the nonces, the MAC.
//!
//! `register_new_matrix_user` and provisioning scripts GET a nonce, then POST the account with
//! an HMAC-SHA1 over `nonce\0username\0password\0admin|notadmin` keyed with the shared secret.
//!
//! The secret is a password to create admins, so no secret printed anywhere may work: unless
//! `registration.shared_secret` sets one, the server generates a random one into its data
//! folder on first start (mode 0600, like the store: whoever can read the data folder is the
//! server's administrator), and a config that sets a known placeholder or a short secret is
//! refused at start. Nonces are handed out to anyone, so they live in a bounded
//! [`ExpiringMap`] and each works once.

use std::{path::Path, time::Duration};

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha1::Sha1;

use super::random_string;
use crate::{
    error::{Error, Result},
    expiring::ExpiringMap,
};

/// The file in the data folder holding the generated secret.
pub(crate) const SECRET_FILE: &str = "registration_shared_secret";
const NONCE_LIFETIME: Duration = Duration::from_secs(60);
/// Nonces outstanding at once; past it the oldest stops working.
const MAX_NONCES: usize = 10_000;
pub struct SharedSecretRegistration {
    /// `None`: disabled.
    secret: Option<String>,
    nonces: Mutex<ExpiringMap<()>>,
}

/// What the MAC covers.
pub(crate) struct MacInput<'a> {
    pub nonce: &'a str,
    pub username: &'a str,
    pub password: &'a str,
    pub admin: bool,
}

impl SharedSecretRegistration {
    /// `configured`: the config's value (`None` when the key is absent: use the data folder's
    /// secret, generating it if needed; `Some("")`: disabled).
    pub(crate) fn open(configured: Option<&str>, data: &Path) -> Result<Self> {
        let secret = match configured {
            Some("") => None,
            Some(secret) => {
                if let Some(why) = crate::config::secrets::shared_secret_refusal(secret) {
                    return Err(Error::internal(why));
                }
                Some(secret.to_owned())
            }
            None => Some(crate::secret_file::read_or_create(
                &data.join(SECRET_FILE),
                "the shared-secret registration secret",
            )?),
        };
        Ok(SharedSecretRegistration {
            secret,
            nonces: Mutex::new(ExpiringMap::new(MAX_NONCES, NONCE_LIFETIME)),
        })
    }

    fn secret(&self) -> Result<&str> {
        self.secret.as_deref().ok_or_else(|| {
            Error::matrix(
                http::StatusCode::BAD_REQUEST,
                "M_UNKNOWN",
                "Shared secret registration is not enabled",
            )
        })
    }

    /// Whether shared-secret registration is on; the error to answer when it is not.
    pub(crate) fn check_enabled(&self) -> Result<()> {
        self.secret().map(|_| ())
    }

    /// A fresh nonce, valid for one registration within a minute.
    pub(crate) fn nonce(&self) -> Result<String> {
        self.secret()?;
        let nonce = random_string(32);
        self.nonces.lock().insert(nonce.clone(), ());
        Ok(nonce)
    }

    /// Consumes the nonce and checks the MAC. The nonce is spent even when the MAC is wrong,
    /// so each guess costs a round trip for a new one.
    pub(crate) fn verify(&self, input: &MacInput<'_>, mac_hex: &str) -> Result<()> {
        let secret = self.secret()?;
        if self.nonces.lock().remove(input.nonce).is_none() {
            return Err(Error::unknown("Unrecognised nonce"));
        }
        let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes())
            .map_err(|_| Error::internal("HMAC key"))?;
        for part in [input.nonce, input.username, input.password] {
            mac.update(part.as_bytes());
            mac.update(b"\x00");
        }
        mac.update(if input.admin { b"admin" } else { b"notadmin" });
        let expected = hex::decode(mac_hex).map_err(|_| Error::forbidden("HMAC incorrect"))?;
        mac.verify_slice(&expected)
            .map_err(|_| Error::forbidden("HMAC incorrect"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_secret_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let first = SharedSecretRegistration::open(None, dir.path()).unwrap();
        let again = SharedSecretRegistration::open(None, dir.path()).unwrap();
        assert_eq!(first.secret, again.secret);
        assert_eq!(first.secret.as_deref().map(str::len), Some(32));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SECRET_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
