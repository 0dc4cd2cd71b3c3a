//! The media repository over HTTP: upload (plain and async), authenticated download and
//! thumbnails under `/_matrix/client/v1/media`, and the deprecated unauthenticated
//! `/_matrix/media/v3` reads when the config keeps them.
//!
//! These handlers do not use the `Ruma<T>` extractor: an upload body is not JSON and may be far
//! larger than `limits.max_request_bytes`, so it is streamed to the media service under the
//! media limit instead of buffered; downloads are streamed from disk. Authentication is the
//! same (`Authorization: Bearer` or `?access_token=`) and every failure is a Matrix error.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Body,
    extract::{FromRequestParts, Path, Request, State},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use http::{HeaderValue, StatusCode, header, request::Parts};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::{
    api::ruma::{AuthRequirement, authenticate},
    error::{Error, Result},
    media::{
        DEFAULT_WAIT, MediaFile, ThumbnailMethod, ThumbnailSpec, UploadInfo, disposition,
        files::read_stream,
    },
    services::Services,
    users::Identity,
};

/// What Synapse sends with media so that a browser opening it directly cannot run anything.
const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; \
     plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; \
     object-src 'self';";

const CLIENT_V1: &str = "/_matrix/client/v1/media";
const LEGACY: [&str; 2] = ["/_matrix/media/v3", "/_matrix/media/r0"];

pub fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let mut r = r
        .route("/_matrix/media/v3/upload", post(upload))
        .route("/_matrix/media/r0/upload", post(upload))
        .route("/_matrix/media/v1/create", post(create))
        .route(
            "/_matrix/media/v3/upload/{server}/{media_id}",
            put(upload_to),
        )
        .route(&format!("{CLIENT_V1}/config"), get(config))
        .route(
            &format!("{CLIENT_V1}/download/{{server}}/{{media_id}}"),
            get(download),
        )
        .route(
            &format!("{CLIENT_V1}/download/{{server}}/{{media_id}}/{{filename}}"),
            get(download),
        )
        .route(
            &format!("{CLIENT_V1}/thumbnail/{{server}}/{{media_id}}"),
            get(thumbnail),
        );
    for prefix in LEGACY {
        r = r
            .route(&format!("{prefix}/config"), get(legacy_config))
            .route(
                &format!("{prefix}/download/{{server}}/{{media_id}}"),
                get(legacy_download),
            )
            .route(
                &format!("{prefix}/download/{{server}}/{{media_id}}/{{filename}}"),
                get(legacy_download),
            )
            .route(
                &format!("{prefix}/thumbnail/{{server}}/{{media_id}}"),
                get(legacy_thumbnail),
            );
    }
    r
}

/// `server`, `media_id` and the optional `filename` of a media path.
#[derive(serde::Deserialize)]
struct MediaPath {
    server: String,
    media_id: String,
    filename: Option<String>,
}

async fn path<T: DeserializeOwned + Send>(parts: &mut Parts, s: &Arc<Services>) -> Result<T> {
    Path::<T>::from_request_parts(parts, s)
        .await
        .map(|p| p.0)
        .map_err(|e| Error::invalid_param(e.body_text()))
}

fn query(parts: &Parts) -> HashMap<String, String> {
    parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn user(s: &Services, parts: &Parts) -> Result<Identity> {
    Ok(authenticate(s, parts, AuthRequirement::Required)?.expect("required"))
}

/// Content type, file name and declared length of an upload request.
fn upload_info(parts: &Parts) -> UploadInfo {
    let headers = &parts.headers;
    UploadInfo {
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        filename: query(parts).remove("filename"),
        content_length: headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()),
    }
}

/// `POST /_matrix/media/v3/upload`
async fn upload(State(s): State<Arc<Services>>, req: Request) -> Result<Json<serde_json::Value>> {
    let (parts, body) = req.into_parts();
    let who = user(&s, &parts)?;
    let uri = s
        .media
        .upload(&who, upload_info(&parts), body.into_data_stream())
        .await?;
    Ok(Json(json!({ "content_uri": uri })))
}

/// `POST /_matrix/media/v1/create`
async fn create(State(s): State<Arc<Services>>, req: Request) -> Result<Json<serde_json::Value>> {
    let (parts, _) = req.into_parts();
    let who = user(&s, &parts)?;
    let (uri, expires) = s.media.create(&who.user_id).await?;
    Ok(Json(
        json!({ "content_uri": uri, "unused_expires_at": expires }),
    ))
}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`
async fn upload_to(
    State(s): State<Arc<Services>>,
    req: Request,
) -> Result<Json<serde_json::Value>> {
    let (mut parts, body) = req.into_parts();
    let who = user(&s, &parts)?;
    let (server, media_id): (String, String) = path(&mut parts, &s).await?;
    s.media
        .upload_pending(
            &who,
            &server,
            &media_id,
            upload_info(&parts),
            body.into_data_stream(),
        )
        .await?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/v1/media/config`
async fn config(State(s): State<Arc<Services>>, req: Request) -> Result<Json<serde_json::Value>> {
    let (parts, _) = req.into_parts();
    user(&s, &parts)?;
    Ok(Json(json!({ "m.upload.size": s.media.max_upload_bytes() })))
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}]`
async fn download(State(s): State<Arc<Services>>, req: Request) -> Result<Response> {
    let (mut parts, _) = req.into_parts();
    user(&s, &parts)?;
    serve_download(&s, &mut parts).await
}

/// `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
async fn thumbnail(State(s): State<Arc<Services>>, req: Request) -> Result<Response> {
    let (mut parts, _) = req.into_parts();
    user(&s, &parts)?;
    serve_thumbnail(&s, &mut parts).await
}

/// The legacy endpoints exist only while the config keeps them; Synapse answers `404
/// M_NOT_FOUND` once it has frozen unauthenticated media, and clients then move to v1.
fn legacy_allowed(s: &Services) -> Result<()> {
    if s.media.legacy_enabled() {
        Ok(())
    } else {
        Err(Error::not_found(
            "Unauthenticated media is disabled; use /_matrix/client/v1/media",
        ))
    }
}

async fn legacy_config(State(s): State<Arc<Services>>) -> Result<Json<serde_json::Value>> {
    legacy_allowed(&s)?;
    Ok(Json(json!({ "m.upload.size": s.media.max_upload_bytes() })))
}

async fn legacy_download(State(s): State<Arc<Services>>, req: Request) -> Result<Response> {
    legacy_allowed(&s)?;
    let (mut parts, _) = req.into_parts();
    serve_download(&s, &mut parts).await
}

async fn legacy_thumbnail(State(s): State<Arc<Services>>, req: Request) -> Result<Response> {
    legacy_allowed(&s)?;
    let (mut parts, _) = req.into_parts();
    serve_thumbnail(&s, &mut parts).await
}

async fn serve_download(s: &Arc<Services>, parts: &mut Parts) -> Result<Response> {
    let p: MediaPath = path(parts, s).await?;
    let wait = timeout(&query(parts))?;
    fetch_remote(s, &p).await?;
    let mut media = s.media.download(&p.server, &p.media_id, wait).await?;
    if p.filename.is_some() {
        media.filename = p.filename;
    }
    Ok(media_response(media))
}

/// Another server's media is fetched over federation into the cache first.
async fn fetch_remote(s: &Services, p: &MediaPath) -> Result<()> {
    let Some(federation) = &s.federation else {
        return Ok(());
    };
    let Ok(server) = ruma::ServerName::parse(&p.server) else {
        return Ok(());
    };
    federation.fetch_media(&s.media, &server, &p.media_id).await
}

async fn serve_thumbnail(s: &Arc<Services>, parts: &mut Parts) -> Result<Response> {
    let p: MediaPath = path(parts, s).await?;
    let q = query(parts);
    let spec = thumbnail_spec(&q)?;
    let wait = timeout(&q)?;
    fetch_remote(s, &p).await?;
    let media = s
        .media
        .thumbnail(&p.server, &p.media_id, spec, wait)
        .await?;
    Ok(media_response(media))
}

/// A thumbnail request's `width`, `height`, `method` and `animated`.
pub(crate) fn thumbnail_spec(q: &HashMap<String, String>) -> Result<ThumbnailSpec> {
    Ok(ThumbnailSpec {
        width: dimension(q, "width")?,
        height: dimension(q, "height")?,
        method: match q.get("method").map(String::as_str) {
            None | Some("scale") => ThumbnailMethod::Scale,
            Some("crop") => ThumbnailMethod::Crop,
            Some(other) => {
                return Err(Error::invalid_param(format!(
                    "method must be \"crop\" or \"scale\", not {other:?}"
                )));
            }
        },
        animated: match q.get("animated").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(Error::invalid_param("animated must be true or false")),
        },
    })
}

/// A required positive integer thumbnail dimension.
fn dimension(q: &HashMap<String, String>, name: &str) -> Result<u32> {
    let raw = q
        .get(name)
        .ok_or_else(|| Error::missing_param(format!("Missing {name}")))?;
    match raw.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::invalid_param(format!(
            "{name} must be a positive integer"
        ))),
    }
}

/// `timeout_ms`: how long to wait for content that is not uploaded yet.
fn timeout(q: &HashMap<String, String>) -> Result<Duration> {
    match q.get("timeout_ms") {
        None => Ok(DEFAULT_WAIT),
        Some(raw) => raw
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| Error::invalid_param("timeout_ms must be a non-negative integer")),
    }
}

/// The file with its type, disposition and the headers that keep browsers from running it.
fn media_response(media: MediaFile) -> Response {
    let content_type = HeaderValue::from_str(&disposition::content_type(&media.content_type))
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let content_disposition = HeaderValue::from_str(&disposition::content_disposition(
        &media.content_type,
        media.filename.as_deref(),
    ))
    .unwrap_or(HeaderValue::from_static("attachment"));
    let mut response = (StatusCode::OK, Body::from_stream(read_stream(media.file))).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::CONTENT_LENGTH, media.size.into());
    h.insert(header::CONTENT_DISPOSITION, content_disposition);
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400, s-maxage=86400"),
    );
    h.insert(
        "x-robots-tag",
        HeaderValue::from_static("noindex, nofollow, noarchive, noimageindex"),
    );
    response
}
