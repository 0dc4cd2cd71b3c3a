//! Prometheus metrics: `GET /metrics` on a listener of its own (`[metrics]`).
//!
//! Written with `prometheus-client`, the Prometheus project's Rust client: its registry holds
//! the HTTP counters and histograms ([`http`], updated by a middleware on every request) and a
//! collector of gauges read at scrape time ([`gauges`]: nothing on the request path). The
//! endpoint answers in OpenMetrics when the scraper asks for it (Prometheus does) and in the
//! Prometheus text format 0.0.4 otherwise, both written by the crate's encoders.
//!
//! Its own listener, not a route of the API: it has no authentication, so an operator binds it
//! where only the monitoring system reaches it, and the API's limits and middleware stay out of
//! its way. No label carries a user id, a room id, a token or a path: only route templates,
//! methods, statuses, consumer names and appservice ids.

mod gauges;
pub mod http;
mod process;

use std::sync::Arc;

use axum::{
    Router,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::{
    encoding::{prometheus_text, text},
    registry::Registry,
};

pub use gauges::{EmailQueues, Snapshot, Source, WhatsappQueues};
pub use http::HttpMetrics;

/// The `Content-Type` of OpenMetrics text.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics of one running server.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// The registry of `http` (what the request middleware records) and of the gauges `source`
    /// gives.
    pub fn new(source: impl Source, http: Arc<HttpMetrics>) -> Arc<Self> {
        let mut registry = Registry::default();
        http.register(&mut registry);
        registry.register_collector(Box::new(gauges::Gauges(Box::new(source))));
        Arc::new(Metrics { registry })
    }

    /// The exposition, in OpenMetrics or in the Prometheus text format.
    fn render(&self, openmetrics: bool) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        if openmetrics {
            text::encode(&mut out, &self.registry)?;
        } else {
            prometheus_text::encode(&mut out, &self.registry)?;
        }
        Ok(out)
    }

    /// The metrics listener's routes: `GET /metrics`, 404 for anything else.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new().route(
            "/metrics",
            get(move |h: HeaderMap| {
                let metrics = self.clone();
                async move { metrics.scrape(&h) }
            }),
        )
    }

    fn scrape(&self, headers: &HeaderMap) -> Response {
        let openmetrics = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("application/openmetrics-text"));
        match self.render(openmetrics) {
            Ok(body) => {
                let kind = if openmetrics {
                    OPENMETRICS
                } else {
                    prometheus_text::CONTENT_TYPE
                };
                ([(header::CONTENT_TYPE, kind)], body).into_response()
            }
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    }
}
