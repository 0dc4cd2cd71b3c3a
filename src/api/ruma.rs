//! The bridge between axum and ruma: authenticate, read the body, parse into a ruma request.
//!
//! Being lenient is deliberate: real clients send empty bodies where every field is optional,
//! `null` for absent fields, and `access_token` in the query string. Synapse accepts all of
//! these, so a stricter server breaks clients that work elsewhere.

use std::{future::Future, sync::Arc};

use axum::{
    Router,
    body::Body,
    extract::{FromRequest, FromRequestParts, RawPathParams, Request, State},
    response::{IntoResponse, Response},
    routing::{MethodFilter, on},
};
use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode};
use ruma::api::{
    IncomingRequest, IncomingRequestExt, OutgoingResponseExt,
    auth_scheme::{
        AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional, NoAccessToken,
        NoAuthentication,
    },
    error::{DeserializationError, FromHttpRequestError},
    path_builder::PathBuilder,
};
use serde_json::Value;

use crate::{
    error::{Error, Result},
    services::Services,
    users::Identity,
};

/// How an endpoint authenticates, read off ruma's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRequirement {
    None,
    Optional,
    Required,
}

pub trait AuthKind {
    const REQUIREMENT: AuthRequirement;
}

macro_rules! auth_kind {
    ($($t:ty => $r:ident),* $(,)?) => {
        $(impl AuthKind for $t { const REQUIREMENT: AuthRequirement = AuthRequirement::$r; })*
    };
}

auth_kind! {
    NoAuthentication => None,
    NoAccessToken => None,
    AccessToken => Required,
    AccessTokenOptional => Optional,
    AppserviceToken => Required,
    AppserviceTokenOptional => Optional,
}

/// A parsed request with the identity it acts as.
pub struct Ruma<T> {
    pub body: T,
    identity: Option<Identity>,
    /// The JSON body as sent, for the few fields ruma types do not expose as-is.
    pub json: Option<Value>,
    /// Where the request comes from (`api::client_ip`).
    pub client_ip: Option<std::net::IpAddr>,
}

impl<T> Ruma<T> {
    /// The authenticated identity. Only call on endpoints that require authentication.
    pub fn identity(&self) -> &Identity {
        self.identity
            .as_ref()
            .expect("endpoint requires authentication")
    }

    pub fn user_id(&self) -> &ruma::UserId {
        &self.identity().user_id
    }

    pub fn maybe_identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }
}

/// Paths whose body *is* event content: it is stored verbatim, `null`s included.
fn body_is_content(path: &str) -> bool {
    [
        "/send/",
        "/state/",
        "/account_data/",
        "/sendToDevice/",
        "/room_keys/",
    ]
    .iter()
    .any(|p| path.contains(p))
}

/// Extracts the access token from `Authorization: Bearer` or the deprecated query parameter.
pub fn access_token(parts: &http::request::Parts) -> Option<String> {
    if let Some(value) = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let mut it = value.splitn(2, ' ');
        if let (Some(scheme), Some(token)) = (it.next(), it.next())
            && scheme.eq_ignore_ascii_case("bearer")
        {
            return Some(token.trim().to_owned());
        }
    }
    let query = parts.uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned())
}

/// Resolves the request's token into an identity, per the endpoint's requirement.
pub fn authenticate(
    services: &Services,
    parts: &http::request::Parts,
    requirement: AuthRequirement,
) -> Result<Option<Identity>> {
    if requirement == AuthRequirement::None {
        return Ok(None);
    }
    match access_token(parts) {
        Some(token) if let Some(asv) = services.appservices.by_token(&token) => {
            appservice_identity(services, parts, &asv).map(Some)
        }
        Some(token) => match services.users.authenticate(&token)? {
            Some(identity) => Ok(Some(identity)),
            None => Err(Error::unknown_token("Unknown access token")),
        },
        None if requirement == AuthRequirement::Required => {
            Err(Error::missing_token("Missing access token"))
        }
        None => Ok(None),
    }
}

/// The identity an appservice acts as: its sender, or the `?user_id=` it asserts, which must be
/// in its namespace and (except to register it) exist. Synapse's errors.
fn appservice_identity(
    services: &Services,
    parts: &http::request::Parts,
    asv: &Arc<crate::appservice::AppService>,
) -> Result<Identity> {
    let asserted = parts.uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "user_id")
            .map(|(_, v)| v.into_owned())
    });
    let user_id = match asserted {
        None => asv.sender.clone(),
        Some(user) => {
            let user = ruma::UserId::parse(user)
                .map_err(|e| Error::invalid_param(format!("Invalid user_id: {e}")))?;
            if !asv.owns_user(&user) {
                return Err(Error::forbidden(
                    "Application service cannot masquerade as this user.",
                ));
            }
            let registering = parts.uri.path().ends_with("/register");
            if user != asv.sender && !registering && !services.users.exists(&user)? {
                return Err(Error::forbidden(
                    "Application service has not registered this user",
                ));
            }
            user
        }
    };
    Ok(Identity {
        user_id,
        // Appservice users act without a device of their own; transaction ids are scoped to
        // the appservice.
        device_id: format!("AS_{}", asv.id()).into(),
        appservice: Some(asv.clone()),
    })
}

/// Reads the body within the configured limit: `M_TOO_LARGE` beyond it, `408` when the client
/// stops sending it (`server::idle`).
pub async fn read_body(services: &Services, body: Body) -> Result<Bytes> {
    axum::body::to_bytes(body, services.config.limits.max_request_bytes)
        .await
        .map_err(|e| {
            if crate::error::body_stalled(&e) {
                crate::error::stalled_error()
            } else {
                Error::too_large("Request body too large")
            }
        })
}

impl<T> FromRequest<Arc<Services>> for Ruma<T>
where
    T: IncomingRequest + Send,
    T::Authentication: AuthKind,
{
    type Rejection = Error;

    async fn from_request(req: Request, services: &Arc<Services>) -> Result<Self> {
        let (mut parts, body) = req.into_parts();
        let params = RawPathParams::from_request_parts(&mut parts, services)
            .await
            .map_err(|e| Error::invalid_param(e.body_text()))?;
        let args: Vec<String> = params.iter().map(|(_, v)| v.to_owned()).collect();
        let identity = authenticate(
            services,
            &parts,
            <T::Authentication as AuthKind>::REQUIREMENT,
        )?;

        let raw = read_body(services, body).await?;
        let mut json = None;
        let body = if raw.iter().all(u8::is_ascii_whitespace) {
            // An empty body where every field is optional means `{}`.
            if matches!(parts.method, Method::POST | Method::PUT) {
                Bytes::from_static(b"{}")
            } else {
                raw
            }
        } else {
            let mut value: Value =
                serde_json::from_slice(&raw).map_err(|_| Error::not_json("Content not JSON."))?;
            if body_is_content(parts.uri.path()) {
                json = Some(value);
                raw
            } else {
                if let Value::Object(map) = &mut value {
                    map.retain(|_, v| !v.is_null());
                }
                let bytes = Bytes::from(serde_json::to_vec(&value).expect("re-serializes"));
                json = Some(value);
                bytes
            }
        };

        let client_ip = super::client_ip::client_ip(&services.config.server, &parts);
        let request = http::Request::from_parts(parts, body.as_ref());
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        // Some of ruma's deserializers index maps and panic on a missing field (`/login`
        // without `type`): a body is the client's doing, so any failure to parse it is a 400.
        let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            T::try_from_http_request(request, &arg_refs)
        }));
        let body = match parsed {
            Ok(parsed) => parsed.map_err(parse_error)?,
            Err(_) => {
                return Err(Error::bad_json(
                    "The request body is not valid for this endpoint",
                ));
            }
        };
        Ok(Ruma {
            body,
            identity,
            json,
            client_ip,
        })
    }
}

fn parse_error(e: FromHttpRequestError) -> Error {
    match e {
        FromHttpRequestError::MethodMismatch { .. } => {
            Error::unrecognized(StatusCode::METHOD_NOT_ALLOWED)
        }
        FromHttpRequestError::Deserialization(e) => match e {
            DeserializationError::Json(e) => Error::bad_json(format!("Invalid request body: {e}")),
            DeserializationError::Query(e) => {
                Error::invalid_param(format!("Invalid query parameter: {e}"))
            }
            DeserializationError::Ident(e) => {
                Error::invalid_param(format!("Invalid identifier: {e}"))
            }
            e => Error::bad_json(e.to_string()),
        },
        e => Error::bad_json(e.to_string()),
    }
}

/// A ruma response as an axum response.
pub struct RumaResponse<R>(pub R);

impl<R: OutgoingResponseExt> IntoResponse for RumaResponse<R> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<BytesMut>() {
            Ok(res) => res.map(|b| Body::from(b.freeze())).into_response(),
            Err(e) => {
                Error::internal(format!("response serialization failed: {e}")).into_response()
            }
        }
    }
}

/// Registers `handler` on every path ruma knows for `T` (r0, v3, unstable), with `T`'s method.
pub fn route<T, H, F>(router: Router<Arc<Services>>, handler: H) -> Router<Arc<Services>>
where
    T: IncomingRequest + Send + 'static,
    T::Authentication: AuthKind,
    T::OutgoingResponse: Send,
    H: Fn(Arc<Services>, Ruma<T>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<T::OutgoingResponse>> + Send + 'static,
{
    let filter = method_filter(&T::METHOD);
    let mut router = router;
    for path in T::PATH_BUILDER.all_paths() {
        let handler = handler.clone();
        router = router.route(
            path,
            on(
                filter,
                move |State(services): State<Arc<Services>>, req: Ruma<T>| {
                    let handler = handler.clone();
                    async move { handler(services, req).await.map(RumaResponse) }
                },
            ),
        );
    }
    router
}

fn method_filter(method: &Method) -> MethodFilter {
    match *method {
        Method::GET => MethodFilter::GET,
        Method::POST => MethodFilter::POST,
        Method::PUT => MethodFilter::PUT,
        Method::DELETE => MethodFilter::DELETE,
        _ => unreachable!("Matrix endpoints use GET, POST, PUT or DELETE"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_token_is_decoded() {
        let req = http::Request::get("/x?a=1&access_token=ab%2Bc")
            .body(())
            .unwrap();
        let (parts, _) = req.into_parts();
        assert_eq!(access_token(&parts).as_deref(), Some("ab+c"));
    }

    #[test]
    fn bearer_header_wins() {
        let req = http::Request::get("/x?access_token=q")
            .header("Authorization", "Bearer h")
            .body(())
            .unwrap();
        let (parts, _) = req.into_parts();
        assert_eq!(access_token(&parts).as_deref(), Some("h"));
    }
}
