//! Reading `/metrics` as Prometheus would: asking for OpenMetrics and parsing the answer with
//! `openmetrics-parser`, a parser of the format that is not the exporter's, which refuses an
//! exposition that breaks the grammar (a family without `# EOF`, a counter without `_total`,
//! a histogram without `+Inf`).

use std::{collections::HashMap, net::SocketAddr};

use openmetrics_parser::{
    HistogramValue, MetricFamily, OpenMetricsType, OpenMetricsValue, openmetrics::parse_openmetrics,
};

type Family = MetricFamily<OpenMetricsType, OpenMetricsValue>;

/// One scrape of `GET http://<addr>/metrics`.
pub struct Metrics {
    pub families: HashMap<String, Family>,
    pub text: String,
}

pub async fn scrape(addr: SocketAddr) -> Metrics {
    let res = reqwest::Client::new()
        .get(format!("http://{addr}/metrics"))
        .header("accept", "application/openmetrics-text;version=1.0.0")
        .send()
        .await
        .expect("metrics answer");
    assert_eq!(res.status(), 200);
    let text = res.text().await.expect("metrics body");
    let families = match parse_openmetrics(&text) {
        Ok(exposition) => exposition.families,
        Err(e) => panic!("not OpenMetrics: {e:?}\n{text}"),
    };
    Metrics { families, text }
}

impl Metrics {
    /// The family `name` (`_total` and unit suffixes as exposed), which must be of `kind`.
    fn family(&self, name: &str, kind: OpenMetricsType) -> Option<&Family> {
        let family = self.families.get(name)?;
        assert_eq!(family.family_type, kind, "type of {name}");
        Some(family)
    }

    /// The values of `name`'s series whose labels include every pair of `labels`.
    fn values(
        &self,
        name: &str,
        kind: OpenMetricsType,
        labels: &[(&str, &str)],
    ) -> Vec<OpenMetricsValue> {
        let Some(family) = self.family(name, kind) else {
            return Vec::new();
        };
        family
            .iter_samples()
            .filter(|s| {
                let set = s.get_labelset().expect("labels bound to the family");
                labels
                    .iter()
                    .all(|(k, v)| set.get_label_value(k) == Some(*v))
            })
            .map(|s| s.value.clone())
            .collect()
    }

    /// The value of the one counter series `name` with `labels`; 0 before it has one.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self
            .values(name, OpenMetricsType::Counter, labels)
            .as_slice()
        {
            [] => 0.0,
            [OpenMetricsValue::Counter(c)] => c.value.as_f64(),
            other => panic!("{name} {labels:?}: {other:?}\n{}", self.text),
        }
    }

    /// The value of the one gauge series `name` with `labels`.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.values(name, OpenMetricsType::Gauge, labels).as_slice() {
            [OpenMetricsValue::Gauge(n)] => n.as_f64(),
            other => panic!("{name} {labels:?}: {other:?}\n{}", self.text),
        }
    }

    /// The one histogram series `name` with `labels`; `None` before it has one.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Option<HistogramValue> {
        match self
            .values(name, OpenMetricsType::Histogram, labels)
            .as_slice()
        {
            [] => None,
            [OpenMetricsValue::Histogram(h)] => Some(h.clone()),
            other => panic!("{name} {labels:?}: {other:?}\n{}", self.text),
        }
    }
}

/// Scrapes until the gauge `name` with `labels` is `want` (a long poll another task started
/// is waiting, a consumer caught up), for at most 10 seconds.
pub async fn wait_for_gauge(addr: SocketAddr, name: &str, labels: &[(&str, &str)], want: f64) {
    let mut last = None;
    for _ in 0..200 {
        let value = scrape(addr).await.gauge(name, labels);
        if value == want {
            return;
        }
        last = Some(value);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{name} {labels:?} never reached {want} (last {last:?})");
}
