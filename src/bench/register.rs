//! Account creation through `POST /register` with user-interactive auth.

use super::client::{ApiError, Homeserver, REQUEST_TIMEOUT};
use super::session::Session;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

impl Homeserver {
    /// Registers `username` through user-interactive auth (spec §5.6 and
    /// §10.1): POST once without `auth` to learn the `session` and `flows`,
    /// then complete a flow made only of `m.login.dummy` and (if a token was
    /// given) `m.login.registration_token` stages. A server that registers
    /// without UIA (200 on the first POST) is accepted too.
    pub async fn register(
        &self,
        username: &str,
        password: &str,
        registration_token: Option<&str>,
    ) -> Result<Session, ApiError> {
        #[derive(Deserialize)]
        struct Flow {
            stages: Vec<String>,
        }
        #[derive(Deserialize)]
        struct UiaState {
            session: Option<String>,
            #[serde(default)]
            flows: Vec<Flow>,
            #[serde(default)]
            completed: Vec<String>,
        }
        #[derive(Deserialize)]
        struct Registered {
            user_id: String,
            access_token: String,
        }

        let url = self.url(&["register"]);
        let mut body = json!({
            "username": username,
            "password": password,
            "initial_device_display_name": "charla-bench",
            "inhibit_login": false,
        });
        let supported = |stage: &str| {
            stage == "m.login.dummy"
                || (stage == "m.login.registration_token" && registration_token.is_some())
        };
        let mut plan: Option<Vec<String>> = None;
        // Bounded: one initial POST plus at most one POST per stage (+ slack).
        for _ in 0..8 {
            let (status, bytes) = self
                .raw(
                    Method::POST,
                    url.clone(),
                    None,
                    Some(&body),
                    REQUEST_TIMEOUT,
                )
                .await?;
            if status.is_success() {
                let r: Registered = serde_json::from_slice(&bytes).map_err(|e| ApiError {
                    status: Some(status.as_u16()),
                    errcode: None,
                    message: format!("bad /register response (inhibit_login ignored?): {e}"),
                    retry_after_ms: None,
                    timeout: false,
                })?;
                return Ok(Session::new(self.clone(), r.user_id, &r.access_token));
            }
            let uia: UiaState = match (status, serde_json::from_slice::<UiaState>(&bytes)) {
                (StatusCode::UNAUTHORIZED, Ok(s)) if s.session.is_some() => s,
                _ => return Err(ApiError::from_body(status, &bytes)),
            };
            if plan.is_none() {
                let mut usable: Vec<&Flow> = uia
                    .flows
                    .iter()
                    .filter(|f| f.stages.iter().all(|s| supported(s)))
                    .collect();
                usable.sort_by_key(|f| f.stages.len());
                let Some(flow) = usable.first() else {
                    let flows: Vec<_> = uia.flows.iter().map(|f| f.stages.join("+")).collect();
                    return Err(ApiError {
                        status: Some(401),
                        errcode: None,
                        message: format!(
                            "no usable registration flow (need m.login.dummy or \
                             m.login.registration_token with --registration-token); \
                             server offers {flows:?}"
                        ),
                        retry_after_ms: None,
                        timeout: false,
                    });
                };
                plan = Some(flow.stages.clone());
            }
            let next = plan
                .as_ref()
                .and_then(|p| p.iter().find(|s| !uia.completed.contains(s)));
            let Some(stage) = next else {
                return Err(ApiError::from_body(status, &bytes));
            };
            let session = uia.session.unwrap_or_default();
            body["auth"] = if stage == "m.login.registration_token" {
                json!({"type": stage, "token": registration_token, "session": session})
            } else {
                json!({"type": stage, "session": session})
            };
        }
        Err(ApiError {
            status: Some(401),
            errcode: None,
            message: "user-interactive registration did not complete".into(),
            retry_after_ms: None,
            timeout: false,
        })
    }
}
