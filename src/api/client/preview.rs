//! `GET /_matrix/client/v1/media/preview_url` and its older `/_matrix/media/{v3,r0,v1}` paths.
//!
//! Every path needs an access token (the legacy ones did too). With previews disabled the
//! endpoint answers as if it did not exist, before authentication, as Synapse does by not
//! registering it. The response is the Open Graph object itself.

use std::{collections::HashMap, sync::Arc};

use axum::{Json, Router, extract::State, routing::get};
use http::{StatusCode, request::Parts};
use serde_json::Value;

use crate::{
    api::ruma::{AuthRequirement, authenticate},
    error::{Error, Result},
    services::Services,
};

const PATHS: [&str; 4] = [
    "/_matrix/client/v1/media/preview_url",
    "/_matrix/media/v3/preview_url",
    "/_matrix/media/r0/preview_url",
    "/_matrix/media/v1/preview_url",
];

pub fn routes(mut r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    for path in PATHS {
        r = r.route(path, get(preview_url));
    }
    r
}

async fn preview_url(State(s): State<Arc<Services>>, parts: Parts) -> Result<Json<Value>> {
    if !s.previews.enabled() {
        return Err(Error::unrecognized(StatusCode::NOT_FOUND));
    }
    let who = authenticate(&s, &parts, AuthRequirement::Required)?.expect("required");
    let query: HashMap<String, String> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let url = query
        .get("url")
        .ok_or_else(|| Error::missing_param("Missing string query parameter 'url'"))?;
    // `ts` asks for a preview as of a time; like Synapse's cache we answer with the current
    // one, but a malformed value is still the client's error.
    if query.get("ts").is_some_and(|ts| ts.parse::<i64>().is_err()) {
        return Err(Error::invalid_param(
            "Query parameter 'ts' must be a string representing an integer",
        ));
    }
    let og = s.previews.preview(&s.media, &who.user_id, url).await?;
    Ok(Json(og))
}
