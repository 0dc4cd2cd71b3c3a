//! Requests by endpoint, method and status, and their latency by endpoint and method.
//!
//! The endpoint label is the route *template* axum matched (`/_matrix/client/v3/rooms/
//! {room_id}/send/{event_type}/{txn_id}`), never the request's path: paths carry room ids,
//! user ids and transaction ids, which would make a series per message (unbounded memory in
//! the server and in Prometheus) and put user data into labels. A request no route matched is
//! `unmatched`. Templates are a fixed set, so the label values are too.
//!
//! This runs on every request, the send path included, so it stays small: the template is
//! looked up in a set of shared strings (no allocation once a route was seen), and the two
//! family lookups are a hash and a read lock each. The layer is only installed when `[metrics]
//! enabled`.

use std::{collections::HashSet, sync::Arc, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};
use parking_lot::RwLock;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

/// The endpoint label of a request no route matched.
const UNMATCHED: &str = "unmatched";

/// Latency buckets in seconds: from a cached read (1 ms) to a long `/sync` (its timeout, up to
/// two minutes, lands in the last buckets or `+Inf`).
const LATENCY_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: Arc<str>,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: Arc<str>,
    method: &'static str,
}

type LatencyFamily = Family<EndpointLabels, Histogram, fn() -> Histogram>;

/// The HTTP metrics of one server.
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
    /// The templates seen so far, shared by every series that names them.
    endpoints: RwLock<HashSet<Arc<str>>>,
}

impl HttpMetrics {
    /// The metrics of a server that has not served yet.
    pub fn new() -> Arc<Self> {
        Arc::new(HttpMetrics {
            requests: Family::default(),
            latency: LatencyFamily::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            endpoints: RwLock::default(),
        })
    }

    /// Registers the two families in `registry`.
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "charla_http_requests",
            "HTTP requests answered, by route template, method and status",
            self.requests.clone(),
        );
        // The name carries the unit; no `# UNIT` line, which some OpenMetrics parsers refuse
        // on a histogram (the tests' among them).
        registry.register(
            "charla_http_request_duration_seconds",
            "Time from a request's arrival to its response's headers, by route template and \
             method (a /sync long poll includes its wait)",
            self.latency.clone(),
        );
    }

    /// The shared string of a template (or of `unmatched`).
    fn endpoint(&self, template: Option<&str>) -> Arc<str> {
        let template = match template {
            // axum routes the router's fallback through a catch-all of its own.
            Some(t) if !t.contains("__private__axum_fallback") => t,
            _ => UNMATCHED,
        };
        if let Some(known) = self.endpoints.read().get(template) {
            return known.clone();
        }
        let mut endpoints = self.endpoints.write();
        if let Some(known) = endpoints.get(template) {
            return known.clone();
        }
        let shared: Arc<str> = Arc::from(template);
        endpoints.insert(shared.clone());
        shared
    }

    fn observe(&self, endpoint: Arc<str>, method: &'static str, status: u16, seconds: f64) {
        self.latency
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.clone(),
                method,
            })
            .observe(seconds);
        self.requests
            .get_or_create(&RequestLabels {
                endpoint,
                method,
                status,
            })
            .inc();
    }
}

/// `router` with every request it routes timed and counted into `metrics`, if given. Applied
/// to a router once its routes and fallback are in, so that the template is known; a router
/// nested as a service later (a bridge) is instrumented on its own, so no request counts twice.
pub fn instrument<S: Clone + Send + Sync + 'static>(
    router: axum::Router<S>,
    metrics: Option<&Arc<HttpMetrics>>,
) -> axum::Router<S> {
    match metrics {
        Some(m) => router.layer(axum::middleware::from_fn_with_state(m.clone(), track)),
        None => router,
    }
}

/// The middleware: times the request and counts it.
async fn track(State(metrics): State<Arc<HttpMetrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let endpoint = metrics.endpoint(req.extensions().get::<MatchedPath>().map(|p| p.as_str()));
    let method = method_label(req.method());
    let response = next.run(req).await;
    let seconds = started.elapsed().as_secs_f64();
    metrics.observe(endpoint, method, response.status().as_u16(), seconds);
    response
}

/// The method as a label: the ones the API uses, anything else as `other` (a client can send
/// any token as a method, and each would be a series).
fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_templates_or_unmatched() {
        let metrics = HttpMetrics::new();
        let a = metrics.endpoint(Some("/_matrix/client/v3/sync"));
        let b = metrics.endpoint(Some("/_matrix/client/v3/sync"));
        assert!(Arc::ptr_eq(&a, &b), "one shared string per template");
        assert_eq!(&*metrics.endpoint(None), "unmatched");
        assert_eq!(
            &*metrics.endpoint(Some("/{*__private__axum_fallback}")),
            "unmatched"
        );
        assert_eq!(
            method_label(&http::Method::from_bytes(b"BREW").unwrap()),
            "other"
        );
    }
}
