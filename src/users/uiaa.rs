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

pub(crate) const DUMMY: &str = "m.login.dummy";
pub(crate) const PASSWORD: &str = "m.login.password";
pub(crate) const REGISTRATION_TOKEN: &str = "m.login.registration_token";

/// What a user-interactive auth session authorizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
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
        Uiaa::with_limits(MAX_SESSIONS, SESSION_LIFETIME)
    }
}

/// What a stage may check against.
pub(crate) struct StageContext<'a> {
    pub users: &'a UserService,
    pub operation: Operation,
    /// The user the request acts for (password stage); `None` during registration.
    pub user: Option<&'a UserId>,
    /// Valid registration tokens.
    pub registration_tokens: &'a [String],
}

impl Uiaa {
    /// At most `capacity` sessions at once, each living `lifetime`.
    fn with_limits(capacity: usize, lifetime: Duration) -> Self {
        Uiaa {
            sessions: Mutex::new(ExpiringMap::new(capacity, lifetime)),
        }
    }

    /// Runs one step of user-interactive auth. `Ok(())` once a flow is complete; otherwise the
    /// spec's 401 body (flows, params, session, completed, and the error of a failed stage).
    pub(crate) async fn check(
        &self,
        auth: Option<&Value>,
        flows: &[&[&'static str]],
        ctx: StageContext<'_>,
    ) -> Result<()> {
        let Some(auth) = auth.filter(|a| a.is_object()) else {
            let session = self.start(flows, &ctx);
            return Err(self.challenge(&session, None));
        };
        let session = self.session_for(auth, flows, &ctx);
        let stage = match offered_stage(auth, flows) {
            Ok(stage) => stage,
            Err(e) => return Err(self.challenge(&session, Some(e))),
        };
        if let Err(e) = verify_stage(stage, auth, &ctx).await {
            return Err(self.challenge(&session, Some(e)));
        }
        self.complete_stage(&session, stage, flows, &ctx)
    }

    /// The session the request names if it is live and this user's for this operation, else
    /// a new one: clients may skip the first round trip for stages that need no challenge,
    /// and a session of someone else (or of another operation) counts for nothing here.
    fn session_for(
        &self,
        auth: &Value,
        flows: &[&[&'static str]],
        ctx: &StageContext<'_>,
    ) -> String {
        match auth.get("session").and_then(Value::as_str) {
            Some(s) if self.belongs(s, ctx) => s.to_owned(),
            _ => self.start(flows, ctx),
        }
    }

    /// Records a verified stage in `session`: `Ok(())` when that completes a flow (the session
    /// is then gone), else the challenge listing what is completed.
    fn complete_stage(
        &self,
        session: &str,
        stage: &'static str,
        flows: &[&[&'static str]],
        ctx: &StageContext<'_>,
    ) -> Result<()> {
        let mut sessions = self.lock();
        let Some(entry) = sessions.get_mut(session) else {
            // Completed by a concurrent request on the same session, or expired, while the
            // stage was checked: the client starts over.
            drop(sessions);
            let fresh = self.start(flows, ctx);
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
            sessions.remove(session);
            return Ok(());
        }
        drop(sessions);
        Err(self.challenge(session, None))
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

/// The stage the request completes, if one of `flows` has it.
fn offered_stage(auth: &Value, flows: &[&[&'static str]]) -> Result<&'static str> {
    let stage = auth.get("type").and_then(Value::as_str).unwrap_or_default();
    flows
        .iter()
        .flat_map(|f| f.iter())
        .find(|s| **s == stage)
        .copied()
        .ok_or_else(|| Error::unknown(format!("Unsupported authentication type {stage:?}")))
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
pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ruma::{owned_server_name, user_id};
    use serde_json::json;

    use super::*;
    use crate::{storage::Store, stream::Notifier, stream::Stream, users::NewAccount};

    const TOKEN: &str = "letmein";

    /// Accounts over a store of their own; the folder lives as long as the service.
    struct Accounts {
        users: UserService,
        _dir: tempfile::TempDir,
    }

    fn accounts() -> Accounts {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let users = UserService::new(
            store.clone(),
            Arc::new(Stream::open(store).unwrap()),
            Arc::new(Notifier::default()),
            owned_server_name!("localhost"),
            Box::new(crate::e2ee::DeviceKeys),
        );
        Accounts { users, _dir: dir }
    }

    fn ctx<'a>(
        users: &'a UserService,
        operation: Operation,
        user: Option<&'a UserId>,
        tokens: &'a [String],
    ) -> StageContext<'a> {
        StageContext {
            users,
            operation,
            user,
            registration_tokens: tokens,
        }
    }

    /// The 401 body a step answered with.
    fn challenge(result: Result<()>) -> Value {
        match result {
            Err(Error::Uiaa(body)) => body,
            other => panic!("expected a 401 challenge, got {other:?}"),
        }
    }

    fn session_of(body: &Value) -> String {
        body["session"].as_str().unwrap().to_owned()
    }

    const TOKEN_THEN_DUMMY: &[&[&str]] = &[&[REGISTRATION_TOKEN, DUMMY]];

    /// One step of `operation` for `user` with `auth`, offering the flow token-then-dummy.
    async fn step(
        uiaa: &Uiaa,
        users: &UserService,
        (user, operation): (Option<&UserId>, Operation),
        auth: Option<Value>,
    ) -> Result<()> {
        let tokens = [TOKEN.to_owned()];
        let ctx = ctx(users, operation, user, &tokens);
        uiaa.check(auth.as_ref(), TOKEN_THEN_DUMMY, ctx).await
    }

    const REGISTER: (Option<&UserId>, Operation) = (None, Operation::Register);

    #[tokio::test]
    async fn a_request_without_auth_gets_the_flows_and_a_new_session() {
        let a = accounts();
        let uiaa = Uiaa::default();
        let flows: &[&[&str]] = &[&[DUMMY], &[REGISTRATION_TOKEN, DUMMY]];
        let body = challenge(
            uiaa.check(None, flows, ctx(&a.users, Operation::Register, None, &[]))
                .await,
        );
        assert_eq!(
            body["flows"],
            json!([
                {"stages": ["m.login.dummy"]},
                {"stages": ["m.login.registration_token", "m.login.dummy"]},
            ])
        );
        assert_eq!(body["params"], json!({}));
        assert_eq!(session_of(&body).len(), 24);
        assert!(body.get("completed").is_none() && body.get("errcode").is_none());
        // A second request without auth gets a session of its own.
        let again = challenge(
            uiaa.check(None, flows, ctx(&a.users, Operation::Register, None, &[]))
                .await,
        );
        assert_ne!(session_of(&again), session_of(&body));
    }

    #[tokio::test]
    async fn a_flow_completes_stage_by_stage_and_its_session_then_ends() {
        let a = accounts();
        let uiaa = Uiaa::default();
        let step = |auth: Value| step(&uiaa, &a.users, REGISTER, Some(auth));
        let session = session_of(&challenge(step(json!({})).await));
        let body = challenge(
            step(json!({"type": REGISTRATION_TOKEN, "token": TOKEN, "session": session})).await,
        );
        assert_eq!(session_of(&body), session);
        assert_eq!(body["completed"], json!(["m.login.registration_token"]));
        assert!(body.get("errcode").is_none());

        step(json!({"type": DUMMY, "session": session}))
            .await
            .unwrap();

        // The completed session authorizes nothing more: naming it starts over.
        let body = challenge(step(json!({"type": DUMMY, "session": session})).await);
        assert_ne!(session_of(&body), session);
        assert_eq!(body["completed"], json!(["m.login.dummy"]));
    }

    #[tokio::test]
    async fn a_failed_or_unknown_stage_is_reported_and_completes_nothing() {
        let a = accounts();
        let uiaa = Uiaa::default();
        let step = |auth: Value| step(&uiaa, &a.users, REGISTER, Some(auth));
        let session = session_of(&challenge(step(json!({})).await));

        let body = challenge(
            step(json!({"type": REGISTRATION_TOKEN, "token": "letmeim", "session": session})).await,
        );
        assert_eq!(session_of(&body), session);
        assert_eq!(body["errcode"], "M_FORBIDDEN");
        assert_eq!(body["error"], "Invalid registration token");
        assert!(body.get("completed").is_none());

        let body = challenge(step(json!({"type": "m.login.sso", "session": session})).await);
        assert_eq!(session_of(&body), session);
        assert_eq!(body["errcode"], "M_UNKNOWN");
        assert!(body.get("completed").is_none());
        assert_eq!(body["flows"][0]["stages"].as_array().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_session_counts_only_for_the_user_and_operation_that_started_it() {
        let a = accounts();
        let uiaa = Uiaa::default();
        let (ana, bob) = (user_id!("@ana:localhost"), user_id!("@bob:localhost"));
        let step = |user: &'static UserId, operation: Operation, auth: Value| {
            step(&uiaa, &a.users, (Some(user), operation), Some(auth))
        };
        let token = json!({"type": REGISTRATION_TOKEN, "token": TOKEN});
        let started = challenge(step(ana, Operation::DeleteDevices, token).await);
        let session = session_of(&started);
        assert_eq!(started["completed"], json!(["m.login.registration_token"]));

        let dummy = json!({"type": DUMMY, "session": session});
        for (user, operation) in [
            (bob, Operation::DeleteDevices),
            (ana, Operation::Deactivate),
        ] {
            let body = challenge(step(user, operation, dummy.clone()).await);
            assert_ne!(session_of(&body), session, "{user} {operation:?}");
            assert_eq!(body["completed"], json!(["m.login.dummy"]));
        }
        // Untouched by the others: its owner finishes it.
        step(ana, Operation::DeleteDevices, dummy).await.unwrap();
    }

    #[tokio::test]
    async fn the_password_stage_checks_the_users_own_password() {
        let a = accounts();
        let uiaa = Uiaa::default();
        let ana = a
            .users
            .create(NewAccount {
                localpart: "ana",
                password: Some("correct horse"),
                admin: false,
                displayname: None,
            })
            .await
            .unwrap();
        let step = |user: Option<&UserId>, auth: Value| {
            let user = user.map(ToOwned::to_owned);
            let uiaa = &uiaa;
            let users = &a.users;
            async move {
                let ctx = ctx(users, Operation::ChangePassword, user.as_deref(), &[]);
                uiaa.check(Some(&auth), &[&[PASSWORD]], ctx).await
            }
        };
        let ana = ana.as_ref();
        let password = |identifier: &str, password: &str| {
            json!({
                "type": PASSWORD,
                "identifier": {"type": "m.id.user", "user": identifier},
                "password": password,
            })
        };

        let wrong = challenge(step(Some(ana), password("ana", "battery staple")).await);
        assert_eq!(wrong["errcode"], "M_FORBIDDEN");
        assert_eq!(wrong["error"], "Invalid username or password");
        // The right password for another account is no proof for this one.
        let other = challenge(step(Some(ana), password("@bob:localhost", "correct horse")).await);
        assert_eq!(other["errcode"], "M_FORBIDDEN");
        let nobody = challenge(step(None, password("ana", "correct horse")).await);
        assert_eq!(nobody["error"], "No user to authenticate");

        step(Some(ana), password("@ANA:localhost", "correct horse"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_session_that_vanished_while_its_stage_was_checked_starts_over() {
        let a = accounts();
        let uiaa = Uiaa::default();
        let ctx = ctx(&a.users, Operation::Register, None, &[]);
        let session = uiaa.start(TOKEN_THEN_DUMMY, &ctx);
        // Completed by a concurrent request (or expired) after this one's stage was verified.
        uiaa.lock().remove(&session);

        let body = challenge(uiaa.complete_stage(&session, DUMMY, TOKEN_THEN_DUMMY, &ctx));
        assert_ne!(session_of(&body), session);
        assert!(body.get("completed").is_none());
        assert_eq!(
            body["flows"],
            json!([{"stages": ["m.login.registration_token", "m.login.dummy"]}])
        );
    }

    #[tokio::test]
    async fn the_oldest_session_goes_when_the_map_is_full() {
        let a = accounts();
        let uiaa = Uiaa::with_limits(2, SESSION_LIFETIME);
        let step = |auth: Option<Value>| step(&uiaa, &a.users, REGISTER, auth);
        let mut sessions = Vec::new();
        for _ in 0..3 {
            sessions.push(session_of(&challenge(step(None).await)));
        }
        let token = |session: &str| {
            Some(json!({"type": REGISTRATION_TOKEN, "token": TOKEN, "session": session}))
        };
        let oldest = challenge(step(token(&sessions[0])).await);
        assert_ne!(
            session_of(&oldest),
            sessions[0],
            "the oldest session was dropped"
        );
        let newest = challenge(step(token(&sessions[2])).await);
        assert_eq!(session_of(&newest), sessions[2]);
        assert_eq!(newest["completed"], json!(["m.login.registration_token"]));
    }
}
