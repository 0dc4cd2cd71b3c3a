//! Accounts: registration, passwords, access tokens, devices and profiles.
//!
//! Passwords are hashed with argon2 on a blocking thread (hashing is deliberately slow and
//! must not stall the reactor). Access tokens are 32 random alphanumerics; each belongs to
//! exactly one device, and deleting the device revokes it.

mod account_data;
pub(crate) mod admin;
pub(crate) mod admin_token;
mod devices;
pub(crate) mod push_rules;
pub(crate) mod shared_secret;
mod tokens;
pub(crate) mod uiaa;

use std::sync::Arc;

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use ruma::{DeviceId, OwnedDeviceId, OwnedServerName, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

pub(crate) use crate::secret_file::random_string;
pub(crate) use devices::{Device, DeviceData};
pub(crate) use push_rules::{PUSH_RULES, PushRulesContent, default_push_rules};

use crate::{
    error::{Error, Result},
    read_cache::ReadCache,
    storage::{Batch, Key, Store, Table},
    stream::Notifier,
    stream::Stream,
};

/// The stored account.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct UserRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    #[serde(default)]
    pub deactivated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub displayname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub created_ts: u64,
}

/// The access token record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenRecord {
    user_id: OwnedUserId,
    device_id: OwnedDeviceId,
}

/// A logged-in session, as `/register` and `/login` return it.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub access_token: String,
}

/// Who a request acts as, once its token is checked.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    /// Set when an appservice makes the request (with its `as_token`), acting as `user_id`.
    pub appservice: Option<std::sync::Arc<crate::appservice::AppService>>,
}

pub struct UserService {
    pub(crate) store: Store,
    pub(crate) stream: Arc<Stream>,
    pub(crate) notifier: Arc<Notifier>,
    pub(crate) server_name: OwnedServerName,
    /// What other services keep per device, dropped with it.
    device_data: Box<dyn DeviceData>,
    /// Bounds concurrent argon2 work (see [`UserService::argon2`]).
    argon2_slots: tokio::sync::Semaphore,
    /// Access token hash → owner: every authenticated request resolves one.
    tokens: ReadCache<tokens::TokenHash, (OwnedUserId, OwnedDeviceId)>,
}

/// A new account to create.
pub(crate) struct NewAccount<'a> {
    pub localpart: &'a str,
    pub password: Option<&'a str>,
    pub admin: bool,
    pub displayname: Option<String>,
}

impl UserService {
    pub(crate) fn new(
        store: Store,
        stream: Arc<Stream>,
        notifier: Arc<Notifier>,
        server_name: OwnedServerName,
        device_data: Box<dyn DeviceData>,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        UserService {
            store,
            stream,
            notifier,
            server_name,
            device_data,
            argon2_slots: tokio::sync::Semaphore::new(cores),
            tokens: ReadCache::new(65_536),
        }
    }

    /// Builds a local user id, enforcing the spec's grammar for new localparts.
    pub(crate) fn user_id_for(&self, localpart: &str) -> Result<OwnedUserId> {
        let valid = !localpart.is_empty()
            && localpart.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'));
        if !valid {
            return Err(Error::invalid_username(
                "User ID may only contain a-z, 0-9, '.', '_', '=', '-', '/' and '+'",
            ));
        }
        let id = format!("@{localpart}:{}", self.server_name);
        if id.len() > 255 {
            return Err(Error::invalid_username("User ID is longer than 255 bytes"));
        }
        UserId::parse(id).map_err(|e| Error::invalid_username(e.to_string()))
    }

    /// Parses what a client typed at login: a full user id or a bare localpart (any case).
    pub(crate) fn parse_login_user(&self, user: &str) -> Result<OwnedUserId> {
        let lowered = user.to_lowercase();
        let parsed = if lowered.starts_with('@') {
            UserId::parse(lowered.as_str()).ok()
        } else {
            UserId::parse_with_server_name(lowered.as_str(), &self.server_name).ok()
        };
        parsed.ok_or_else(|| Error::forbidden("Invalid username or password"))
    }

    pub(crate) fn get(&self, user: &UserId) -> Result<Option<UserRecord>> {
        match self.store.get(Table::Users, user.as_bytes())? {
            Some(bytes) => Ok(Some(
                serde_json::from_slice(&bytes).map_err(|e| Error::internal(e.to_string()))?,
            )),
            None => Ok(None),
        }
    }

    /// Whether a local account exists (deactivated ones included: their ids stay taken).
    pub(crate) fn exists(&self, user: &UserId) -> Result<bool> {
        Ok(self.store.contains(Table::Users, user.as_bytes())?)
    }

    pub(crate) fn is_active(&self, user: &UserId) -> Result<bool> {
        Ok(self.get(user)?.is_some_and(|u| !u.deactivated))
    }

    async fn put(&self, user: &UserId, record: &UserRecord) -> Result<()> {
        let mut batch = Batch::new();
        batch.put(
            Table::Users,
            user.as_bytes().to_vec(),
            serde_json::to_vec(record).expect("serializes"),
        );
        self.store.write_durable(batch).await?;
        Ok(())
    }

    /// Creates an account. `M_USER_IN_USE` if the id is taken.
    pub(crate) async fn create(&self, account: NewAccount<'_>) -> Result<OwnedUserId> {
        let user_id = self.user_id_for(account.localpart)?;
        let password_hash = match account.password {
            Some(p) => Some(self.hash_password(p.to_owned()).await?),
            None => None,
        };
        let record = UserRecord {
            password_hash,
            deactivated: false,
            displayname: account
                .displayname
                .or_else(|| Some(account.localpart.to_owned())),
            avatar_url: None,
            admin: account.admin,
            created_ts: ruma::MilliSecondsSinceUnixEpoch::now().get().into(),
        };
        // Compare-and-swap so two concurrent registrations of one name cannot both succeed.
        let bytes = serde_json::to_vec(&record).expect("serializes");
        let Some(ticket) = self
            .store
            .insert_if_absent(Table::Users, user_id.as_bytes(), &bytes)?
        else {
            return Err(Error::user_in_use("User ID already taken"));
        };
        self.store.durable(ticket).await?;
        tracing::info!(user = %user_id, "account created");
        Ok(user_id)
    }

    /// Checks a password; the same error for unknown users and wrong passwords, after the same
    /// work: an account without a password hash (unknown, deactivated, appservice-made) is
    /// checked against a dummy hash, so the answer's timing does not tell which accounts exist.
    pub(crate) async fn check_password(&self, user: &UserId, password: &str) -> Result<()> {
        let denied = || Error::forbidden("Invalid username or password");
        let record = self.get(user)?;
        let hash = record.as_ref().and_then(|r| r.password_hash.clone());
        let real = hash.is_some();
        let password = password.to_owned();
        let ok = self
            .argon2(move || {
                // The dummy is made on the blocking thread too, the first time.
                let hash = hash.unwrap_or_else(|| dummy_hash().to_owned());
                PasswordHash::new(&hash)
                    .map(|parsed| {
                        Argon2::default()
                            .verify_password(password.as_bytes(), &parsed)
                            .is_ok()
                    })
                    .unwrap_or(false)
            })
            .await?;
        if record.is_some_and(|r| r.deactivated) {
            return Err(Error::user_deactivated("This account has been deactivated"));
        }
        if ok && real { Ok(()) } else { Err(denied()) }
    }

    pub(crate) async fn set_password(&self, user: &UserId, password: &str) -> Result<()> {
        let mut record = self
            .get(user)?
            .ok_or_else(|| Error::not_found("Unknown user"))?;
        record.password_hash = Some(self.hash_password(password.to_owned()).await?);
        self.put(user, &record).await
    }

    /// Starts a session on a (new or existing) device and returns its fresh access token.
    pub(crate) async fn open_session(
        &self,
        user: &UserId,
        device_id: Option<OwnedDeviceId>,
        display_name: Option<String>,
    ) -> Result<Session> {
        let device_id = device_id.unwrap_or_else(|| random_string(10).to_uppercase().into());
        let access_token = random_string(32);
        let token_hash = tokens::hash(&access_token);
        let mut batch = Batch::new();
        // Logging in again on a device replaces its token.
        let replaced = self
            .device(user, &device_id)?
            .and_then(|old| tokens::from_hex(&old.token_hash));
        if let Some(old) = &replaced {
            batch.delete(Table::Tokens, tokens::key(old));
        }
        let device = Device {
            device_id: device_id.clone(),
            display_name,
            token_hash: tokens::to_hex(&token_hash),
            legacy_token: None,
            last_seen_ts: Some(ruma::MilliSecondsSinceUnixEpoch::now().get().into()),
            last_seen_ip: None,
        };
        let token = TokenRecord {
            user_id: user.to_owned(),
            device_id: device_id.clone(),
        };
        batch.put(
            Table::Tokens,
            tokens::key(&token_hash),
            serde_json::to_vec(&token).expect("serializes"),
        );
        batch.put(
            Table::Devices,
            Key::new().str(user.as_str()).str(device_id.as_str()),
            serde_json::to_vec(&device).expect("serializes"),
        );
        let written = self.store.write_durable(batch).await;
        // Also after a failed wait: the deletion may be applied in memory already.
        self.tokens.invalidate(replaced.iter());
        written?;
        Ok(Session {
            user_id: user.to_owned(),
            device_id,
            access_token,
        })
    }

    /// Resolves an access token; `None` for unknown or revoked tokens.
    pub(crate) fn authenticate(&self, token: &str) -> Result<Option<Identity>> {
        let identity = |(user_id, device_id)| Identity {
            user_id,
            device_id,
            appservice: None,
        };
        let hash = tokens::hash(token);
        if let Some(owner) = self.tokens.get(&hash) {
            return Ok(Some(identity(owner)));
        }
        let generation = self.tokens.generation();
        let Some(bytes) = self.store.get(Table::Tokens, &tokens::key(&hash))? else {
            return Ok(None);
        };
        let record: TokenRecord =
            serde_json::from_slice(&bytes).map_err(|e| Error::internal(e.to_string()))?;
        let owner = (record.user_id, record.device_id);
        self.tokens.fill(hash, owner.clone(), generation);
        Ok(Some(identity(owner)))
    }

    /// Logs out every device of a user.
    pub(crate) async fn logout_all(&self, user: &UserId) -> Result<()> {
        let devices = self.devices(user)?;
        let ids: Vec<OwnedDeviceId> = devices.into_iter().map(|d| d.device_id).collect();
        self.delete_devices(user, &ids).await
    }

    /// Logs out every device but one (after a password change).
    pub(crate) async fn logout_others(&self, user: &UserId, keep: &DeviceId) -> Result<()> {
        let ids: Vec<OwnedDeviceId> = self
            .devices(user)?
            .into_iter()
            .map(|d| d.device_id)
            .filter(|d| d != keep)
            .collect();
        self.delete_devices(user, &ids).await
    }

    /// Marks the account deactivated and revokes every token. Room departures are the caller's.
    pub(crate) async fn deactivate(&self, user: &UserId) -> Result<()> {
        self.logout_all(user).await?;
        let mut record = self
            .get(user)?
            .ok_or_else(|| Error::not_found("Unknown user"))?;
        record.deactivated = true;
        record.password_hash = None;
        record.displayname = None;
        record.avatar_url = None;
        self.put(user, &record).await?;
        tracing::info!(user = %user, "account deactivated");
        Ok(())
    }

    pub(crate) async fn set_profile(
        &self,
        user: &UserId,
        displayname: Option<Option<String>>,
        avatar_url: Option<Option<String>>,
    ) -> Result<UserRecord> {
        if let Some(Some(name)) = &displayname {
            check_displayname(name)?;
        }
        if let Some(Some(url)) = &avatar_url
            && url.len() > MAX_AVATAR_URL_BYTES
        {
            return Err(Error::invalid_param("avatar_url is too long"));
        }
        let mut record = self
            .get(user)?
            .ok_or_else(|| Error::not_found("Profile not found"))?;
        if let Some(d) = displayname {
            record.displayname = d;
        }
        if let Some(a) = avatar_url {
            record.avatar_url = a;
        }
        self.put(user, &record).await?;
        Ok(record)
    }
}

impl UserService {
    /// Runs argon2 work on the blocking pool, a core's worth at a time: each hash holds
    /// 19 MiB, and a burst of logins would otherwise hold (and leave the allocator holding)
    /// hundreds of megabytes.
    async fn argon2<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let _slot = self
            .argon2_slots
            .acquire()
            .await
            .map_err(|e| Error::internal(e.to_string()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Error::internal(e.to_string()))
    }

    async fn hash_password(&self, password: String) -> Result<String> {
        self.argon2(move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| Error::internal(format!("password hashing failed: {e}")))
        })
        .await?
    }
}

/// An argon2 hash with the same parameters as real ones, of a password nobody knows: what
/// accounts without a password are checked against.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(random_string(32).as_bytes(), &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// Synapse's bound on display names: they are shown everywhere and are a push rule pattern
/// (`.m.rule.contains_display_name`) for every message in the user's rooms.
pub(crate) const MAX_DISPLAYNAME_CHARS: usize = 256;
const MAX_AVATAR_URL_BYTES: usize = 1024;

/// Refuses a display name longer than [`MAX_DISPLAYNAME_CHARS`].
pub(crate) fn check_displayname(name: &str) -> Result<()> {
    if name.chars().count() > MAX_DISPLAYNAME_CHARS {
        return Err(Error::invalid_param(format!(
            "displayname is too long (max {MAX_DISPLAYNAME_CHARS})"
        )));
    }
    Ok(())
}
