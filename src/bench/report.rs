//! Result collection and output: a compact human table and one JSON object.
//!
//! Each scenario fills a [`Report`] with human rows (already formatted) and
//! machine values (raw numbers) side by side, so the table and `--json` can
//! never disagree about what was measured.

use serde_json::{Map, Value};

/// Results of one scenario.
#[derive(Debug, Clone)]
pub struct Report {
    /// Scenario key (`send`, `sync-latency`, ...), also the JSON key.
    pub name: &'static str,
    /// One-line description of the configuration that was run.
    pub title: String,
    rows: Vec<(String, String)>,
    json: Map<String, Value>,
    /// Correctness failures (e.g. wrong room count). Any problem makes the
    /// whole run exit with an error after printing.
    pub problems: Vec<String>,
}

impl Report {
    pub fn new(name: &'static str, title: impl Into<String>) -> Report {
        Report {
            name,
            title: title.into(),
            rows: Vec::new(),
            json: Map::new(),
            problems: Vec::new(),
        }
    }

    /// Adds a human-readable row.
    pub fn row(&mut self, label: impl Into<String>, value: impl Into<String>) {
        self.rows.push((label.into(), value.into()));
    }

    /// Adds a machine-readable value.
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.json.insert(key.to_string(), value.into());
    }

    /// Records a correctness failure.
    pub fn problem(&mut self, msg: impl Into<String>) {
        self.problems.push(msg.into());
    }

    /// A report for a scenario that could not run at all.
    pub fn failed(name: &'static str, err: &str) -> Report {
        let mut r = Report::new(name, "FAILED");
        r.problem(format!("scenario failed: {err}"));
        r
    }

    pub fn to_json(&self) -> Value {
        let mut obj = self.json.clone();
        obj.insert("title".into(), Value::from(self.title.clone()));
        obj.insert("problems".into(), Value::from(self.problems.clone()));
        Value::Object(obj)
    }
}

/// Renders all reports plus free-form header rows as a compact table.
pub fn render_table(header: &[(String, String)], reports: &[Report]) -> String {
    let width = header
        .iter()
        .map(|(k, _)| k.len())
        .chain(
            reports
                .iter()
                .flat_map(|r| r.rows.iter().map(|(k, _)| k.len())),
        )
        .max()
        .unwrap_or(0)
        .max(8);
    let mut out = String::new();
    for (k, v) in header {
        out.push_str(&format!("{k:<width$}  {v}\n"));
    }
    for r in reports {
        out.push_str(&format!("\n== {} — {}\n", r.name, r.title));
        for (k, v) in &r.rows {
            out.push_str(&format!("  {k:<width$}  {v}\n"));
        }
        for p in &r.problems {
            out.push_str(&format!("  {:<width$}  {p}\n", "PROBLEM"));
        }
    }
    out
}

/// `VmRSS` and `VmHWM` (peak RSS) of a process in KiB, from
/// `/proc/<pid>/status`. `None` if the process or fields are missing.
pub async fn read_rss(pid: u32) -> Option<(u64, u64)> {
    let status = tokio::fs::read_to_string(format!("/proc/{pid}/status"))
        .await
        .ok()?;
    parse_rss(&status)
}

fn parse_rss(status: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// KiB as a short MiB string.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let s = "Name:\tcharla\nVmHWM:\t  20480 kB\nVmRSS:\t   10240 kB\nThreads:\t4\n";
        assert_eq!(parse_rss(s), Some((10240, 20480)));
        assert_eq!(parse_rss("Name: x\n"), None);
        assert_eq!(mib(10240), "10.0 MiB");
    }

    #[test]
    fn table_contains_rows_and_problems() {
        let mut r = Report::new("send", "4 clients");
        r.row("sends/s", "123.4");
        r.set("sends_per_sec", 123.4);
        r.problem("bad");
        let t = render_table(&[("homeserver".into(), "http://x".into())], &[r.clone()]);
        assert!(t.contains("== send — 4 clients"));
        assert!(t.contains("sends/s"));
        assert!(t.contains("PROBLEM"));
        assert_eq!(r.to_json()["sends_per_sec"], Value::from(123.4));
    }
}
