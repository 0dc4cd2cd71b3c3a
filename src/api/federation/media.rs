//! This server's media for other servers: `GET /_matrix/federation/v1/media/download/{mediaId}`
//! and `…/thumbnail/{mediaId}`, answered `multipart/mixed` (`federation/media.rs`).

use std::{collections::HashMap, sync::Arc};

use axum::{
    body::Body,
    extract::{Path, Query, State},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, StatusCode, header};

use super::peer::Peer;
use crate::{
    api::client::media::thumbnail_spec,
    error::Error,
    federation::media::framing,
    media::{DEFAULT_WAIT, MediaFile, disposition, files::read_stream},
    services::Services,
};

pub(super) async fn download(
    State(s): State<Arc<Services>>,
    Path(media_id): Path<String>,
    peer: Peer,
) -> Result<Response, Error> {
    tracing::debug!(origin = %peer.origin, %media_id, "media download");
    let server = s.config.server_name.as_str();
    let media = s.media.download(server, &media_id, DEFAULT_WAIT).await?;
    Ok(multipart(media))
}

pub(super) async fn thumbnail(
    State(s): State<Arc<Services>>,
    Path(media_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    peer: Peer,
) -> Result<Response, Error> {
    tracing::debug!(origin = %peer.origin, %media_id, "media thumbnail");
    let spec = thumbnail_spec(&q)?;
    let server = s.config.server_name.as_str();
    let media = s
        .media
        .thumbnail(server, &media_id, spec, DEFAULT_WAIT)
        .await?;
    Ok(multipart(media))
}

/// The media as the second part of a `multipart/mixed` answer, streamed from disk.
fn multipart(media: MediaFile) -> Response {
    let boundary: String = {
        use rand::{Rng, distributions::Alphanumeric};
        rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(32)
            .map(char::from)
            .collect()
    };
    let content_type = disposition::content_type(&media.content_type);
    let content_disposition =
        disposition::content_disposition(&media.content_type, media.filename.as_deref());
    let (before, after) = framing(&boundary, &content_type, &content_disposition);
    let length = before.len() as u64 + media.size + after.len() as u64;
    let body = futures_util::stream::once(async move { Ok(Bytes::from(before)) })
        .chain(read_stream(media.file))
        .chain(futures_util::stream::once(
            async move { Ok(Bytes::from(after)) },
        ));
    let mut response = (StatusCode::OK, Body::from_stream(body)).into_response();
    let h = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&format!("multipart/mixed; boundary={boundary}")) {
        h.insert(header::CONTENT_TYPE, value);
    }
    h.insert(header::CONTENT_LENGTH, length.into());
    response
}
