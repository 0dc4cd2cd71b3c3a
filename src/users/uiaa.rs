//! User-interactive authentication: the 401 dance of `/register`, password changes, device
//! deletion and deactivation.
//!
//! Sessions live in memory: they last minutes, and a restart only makes a client start over.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::UserId;
use serde_json::{Value, json};

use super::{UserService, random_string};
use crate::error::{Error, Result};

const SESSION_LIFETIME: Duration = Duration::from_secs(30 * 60);

pub const DUMMY: &str = "m.login.dummy";
pub const PASSWORD: &str = "m.login.password";
pub const REGISTRATION_TOKEN: &str = "m.login.registration_token";

struct UiaSession {
    flows: Vec<Vec<&'static str>>,
    completed: Vec<&'static str>,
    created: Instant,
}

#[derive(Default)]
pub struct Uiaa {
    sessions: Mutex<HashMap<String, UiaSession>>,
}

/// What a stage may check against.
pub struct StageContext<'a> {
    pub users: &'a UserService,
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
            let session = self.start(flows);
            return Err(self.challenge(&session, None));
        };
        let session = match auth.get("session").and_then(Value::as_str) {
            Some(s) if self.sessions.lock().expect("uiaa lock").contains_key(s) => s.to_owned(),
            // Clients may skip the first round trip for stages that need no prior challenge.
            _ => self.start(flows),
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
        let mut sessions = self.sessions.lock().expect("uiaa lock");
        let entry = sessions.get_mut(&session).expect("session exists");
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

    fn start(&self, flows: &[&[&'static str]]) -> String {
        let id = random_string(24);
        let mut sessions = self.sessions.lock().expect("uiaa lock");
        sessions.retain(|_, s| s.created.elapsed() < SESSION_LIFETIME);
        sessions.insert(
            id.clone(),
            UiaSession {
                flows: flows.iter().map(|f| f.to_vec()).collect(),
                completed: Vec::new(),
                created: Instant::now(),
            },
        );
        id
    }

    fn challenge(&self, session: &str, error: Option<Error>) -> Error {
        let sessions = self.sessions.lock().expect("uiaa lock");
        let (flows, completed) = sessions
            .get(session)
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
