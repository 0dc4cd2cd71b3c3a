//! The embeddable widget's files, built into the binary: one binary serves them, and the
//! widget a server serves always speaks that server's API.

/// `GET /widget/charla.js`.
pub(crate) const SCRIPT: &str = include_str!("widget/charla.js");
/// `GET /widget/charla.css`.
pub(crate) const STYLE: &str = include_str!("widget/charla.css");
/// `GET /widget/`: the demo page showing how a website embeds the widget.
pub(crate) const DEMO: &str = include_str!("widget/index.html");
