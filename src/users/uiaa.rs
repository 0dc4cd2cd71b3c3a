//! User-interactive authentication: the 401 dance of `/register`, password changes, device
//! deletion and deactivation.
//!
//! Sessions live in memory: they last minutes, and a restart only makes a client start over.
//! Anyone can start one (`/register` without auth), so they are held in an [`ExpiringMap`]:
//! bounded in number, the oldest dropped first. A session belongs to the user and the operation
//! that started it; another request naming it starts over with a fresh challenge, as does a
//! request whose session another request completed (or that expired) meanwhile.

use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};
use ruma::{OwnedUserId, UserId};
use serde_json::{Value, json};

use super::{UserService, random_string};
use crate::{
    error::{Error, Result},
    expiring::ExpiringMap,
};

const SESSION_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Sessions kept at once: far above what real clients have open, small enough that a flood of
/// challenges costs a few megabytes.
const MAX_SESSIONS: usize = 10_000;

pub const DUMMY: &str = "m.login.dummy";
pub const PASSWORD: &str = "m.login.password";
pub const REGISTRATION_TOKEN: &str = "m.login.registration_token";

/// What a user-interactive auth session authorizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Register,
    ChangePassword,
    Deactivate,
    DeleteDevices,
    UploadSigningKeys,
}

struct UiaSession {
    flows: Vec<Vec<&'static str>>,
    completed: Vec<&'static str>,
    user: Option<OwnedUserId>,
    operation: Operation,
}

pub struct Uiaa {
    sessions: Mutex<ExpiringMap<UiaSession>>,
}

impl Default for Uiaa {
    fn default() -> Self {
        Uiaa {
            sessions: Mutex::new(ExpiringMap::new(MAX_SESSIONS, SESSION_LIFETIME)),
        }
    }
}

/// What a stage may check against.
pub struct StageContext<'a> {
    pub users: &'a UserService,
    pub operation: Operation,
    /// The user the request acts for (password stage); `None` during registration.
    pub user: Option<&'a UserId>,
    /// Valid registration tokens.
    pub registration_tokens: &'a [String],
}

impl Uiaa {
    /// Runs one step of user-interactive auth. `Ok(())` once a flow is complete; otherwise the
    /// spec's 401 body (flows, params, session, completed, and the error of a failed stage).
    pub async fn check(
        &self,
        auth: Option<&Value>,
        flows: &[&[&'static str]],
        ctx: StageContext<'_>,
    ) -> Result<()> {
        let Some(auth) = auth.filter(|a| a.is_object()) else {
            let session = self.start(flows, &ctx);
            return Err(self.challenge(&session, None));
        };
        let named = auth.get("session").and_then(Value::as_str);
        let session = match named {
            Some(s) if self.belongs(s, &ctx) => s.to_owned(),
            // Clients may skip the first round trip for stages that need no prior challenge.
            _ => self.start(flows, &ctx),
        };
        let stage = auth.get("type").and_then(Value::as_str).unwrap_or_default();
        let stage = match flows.iter().flat_map(|f| f.iter()).find(|s| **s == stage) {
            Some(s) => *s,
            None => {
                let e = Error::unknown(format!("Unsupported authentication type {stage:?}"));
                return Err(self.challenge(&session, Some(e)));
            }
        };
        if let Err(e) = verify_stage(stage, auth, &ctx).await {
            return Err(self.challenge(&session, Some(e)));
        }
        let mut sessions = self.lock();
        let Some(entry) = sessions.get_mut(&session) else {
            // Completed by a concurrent request on the same session, or expired, while the
            // stage was checked: the client starts over.
            drop(sessions);
            let fresh = self.start(flows, &ctx);
            return Err(self.challenge(&fresh, None));
        };
        if !entry.completed.contains(&stage) {
            entry.completed.push(stage);
        }
        if entry
            .flows
            .iter()
            .any(|f| f.iter().all(|s| entry.completed.contains(s)))
        {
            sessions.remove(&session);
            return Ok(());
        }
        drop(sessions);
        Err(self.challenge(&session, None))
    }

    /// Whether `session` is live and was started by this user for this operation.
    fn belongs(&self, session: &str, ctx: &StageContext<'_>) -> bool {
        self.lock()
            .get_mut(session)
            .is_some_and(|s| s.operation == ctx.operation && s.user.as_deref() == ctx.user)
    }

    fn start(&self, flows: &[&[&'static str]], ctx: &StageContext<'_>) -> String {
        let id = random_string(24);
        self.lock().insert(
            id.clone(),
            UiaSession {
                flows: flows.iter().map(|f| f.to_vec()).collect(),
                completed: Vec::new(),
                user: ctx.user.map(ToOwned::to_owned),
                operation: ctx.operation,
            },
        );
        id
    }

    fn lock(&self) -> MutexGuard<'_, ExpiringMap<UiaSession>> {
        self.sessions.lock()
    }

    fn challenge(&self, session: &str, error: Option<Error>) -> Error {
        let (flows, completed) = self
            .lock()
            .get_mut(session)
            .map(|s| (s.flows.clone(), s.completed.clone()))
            .unwrap_or_default();
        let mut body = json!({
            "flows": flows.iter().map(|f| json!({ "stages": f })).collect::<Vec<_>>(),
            "params": {},
            "session": session,
        });
        if !completed.is_empty() {
            body["completed"] = json!(completed);
        }
        if let Some(e) = error {
            body["errcode"] = json!(e.errcode());
            body["error"] = e.body()["error"].clone();
        }
        Error::Uiaa(body)
    }
}

async fn verify_stage(stage: &str, auth: &Value, ctx: &StageContext<'_>) -> Result<()> {
    match stage {
        DUMMY => Ok(()),
        REGISTRATION_TOKEN => {
            let token = auth
                .get("token")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if ctx
                .registration_tokens
                .iter()
                .any(|t| constant_time_eq(t, token))
            {
                Ok(())
            } else {
                Err(Error::forbidden("Invalid registration token"))
            }
        }
        PASSWORD => {
            let Some(user) = ctx.user else {
                return Err(Error::forbidden("No user to authenticate"));
            };
            let claimed = auth
                .get("identifier")
                .and_then(|i| i.get("user"))
                .or_else(|| auth.get("user"))
                .and_then(Value::as_str);
            if let Some(claimed) = claimed
                && ctx.users.parse_login_user(claimed)? != user
            {
                return Err(Error::forbidden("Invalid username or password"));
            }
            let password = auth
                .get("password")
                .and_then(Value::as_str)
                .unwrap_or_default();
            ctx.users.check_password(user, password).await
        }
        _ => Err(Error::unknown("Unsupported stage")),
    }
}

/// Compares secrets without leaking where they differ through timing.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}
