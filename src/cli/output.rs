//! What a command prints: one JSON document with `--json` (for scripts), a table otherwise (for
//! people). Logs never go to stdout, so `--json` output always parses.

use clap::Args;
use comfy_table::{ContentArrangement, Table as Grid, presets::UTF8_FULL_CONDENSED};
use serde_json::Value;

use super::client::Failure;

/// `--json`, accepted after every command.
#[derive(Args, Debug, Clone, Copy)]
pub struct JsonFlag {
    /// Print one JSON document on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Prints `value` as one JSON document.
pub(crate) fn json(value: &Value) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::local(format!("cannot print JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

/// Prints `value` as JSON with `--json`, else calls `human` to print it for people.
pub(crate) fn print(
    flag: JsonFlag,
    value: &Value,
    human: impl FnOnce(&Value),
) -> Result<(), Failure> {
    if flag.json {
        json(value)
    } else {
        human(value);
        Ok(())
    }
}

/// A table with a header row.
pub(crate) struct Table(Grid);

impl Table {
    pub(crate) fn new(headers: &[&str]) -> Self {
        let mut grid = Grid::new();
        grid.load_preset(UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_header(headers.iter().copied());
        Table(grid)
    }

    /// A row of the named fields of `object`, rendered with [`cell`].
    pub(crate) fn object_row(&mut self, object: &Value, fields: &[&str]) {
        self.0.add_row(fields.iter().map(|f| cell(&object[*f])));
    }

    pub(crate) fn print(&self) {
        println!("{}", self.0);
    }
}

/// The fields of one object, one per line: `show` commands.
pub(crate) fn fields(object: &Value, names: &[&str]) {
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0);
    for name in names {
        println!("{name:<width$}  {}", cell(&object[*name]));
    }
}

/// A JSON value as a table cell: strings bare, absent as `-`, lists comma-separated.
pub(crate) fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".into(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn cells_are_plain_text() {
        assert_eq!(cell(&json!("a")), "a");
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!(["x", "y"])), "x, y");
        assert_eq!(cell(&json!([])), "-");
        assert_eq!(cell(&json!(3)), "3");
        assert_eq!(cell(&json!(true)), "true");
    }
}
