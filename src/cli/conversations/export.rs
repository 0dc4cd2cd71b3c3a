//! `conversation export`: every page of each conversation's export, as one JSON document or as
//! CSV (the `csv` crate: a header row, RFC 4180 quoting and CRLF line ends), on stdout or into
//! exactly the `--output` file.

use std::{io::Write, path::Path};

use serde_json::{Value, json};

use super::ExportFormat;
use crate::cli::client::{AdminClient, Failure};

/// The CSV's columns: the conversation, then the message's fields as the API names them.
const COLUMNS: &[&str] = &[
    "room_id",
    "event_id",
    "type",
    "sender",
    "sender_name",
    "origin_server_ts",
    "time",
    "msgtype",
    "body",
    "media_url",
    "download_url",
    "in_reply_to",
    "edited",
    "redacted",
];

/// Timeline events the server reads per page.
const PAGE: &str = "500";

pub(super) async fn run(
    client: &AdminClient,
    room_ids: &[String],
    format: ExportFormat,
    output: Option<&Path>,
) -> Result<(), Failure> {
    let mut conversations = Vec::with_capacity(room_ids.len());
    for room_id in room_ids {
        conversations.push(export_one(client, room_id).await?);
    }
    let bytes = match format {
        ExportFormat::Json => {
            let document = json!({ "conversations": conversations });
            let mut text = serde_json::to_vec_pretty(&document)
                .map_err(|e| Failure::local(format!("cannot write JSON: {e}")))?;
            text.push(b'\n');
            text
        }
        ExportFormat::Csv => csv(&conversations)?,
    };
    let messages: usize = conversations
        .iter()
        .map(|c| c["messages"].as_array().map_or(0, Vec::len))
        .sum();
    match output {
        Some(path) => {
            std::fs::write(path, &bytes)
                .map_err(|e| Failure::local(format!("cannot write {}: {e}", path.display())))?;
            eprintln!(
                "{messages} messages of {} conversations written to {}",
                conversations.len(),
                path.display()
            );
        }
        None => std::io::stdout()
            .write_all(&bytes)
            .map_err(|e| Failure::local(format!("cannot write to stdout: {e}")))?,
    }
    Ok(())
}

/// One conversation's whole export: `{"room_id", "conversation", "messages"}`, page by page.
async fn export_one(client: &AdminClient, room_id: &str) -> Result<Value, Failure> {
    let mut messages = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut query = vec![("limit", PAGE.to_owned())];
        if let Some(from) = &from {
            query.push(("from", from.clone()));
        }
        let mut page = client
            .get(&["conversations", room_id, "export"], &query)
            .await?;
        if let Some(list) = page["messages"].as_array_mut() {
            messages.append(list);
        }
        match page["next"].as_str() {
            Some(next) if from.as_deref() != Some(next) => from = Some(next.to_owned()),
            // The conversation as the last page saw it.
            _ => {
                let conversation = page["conversation"].take();
                return Ok(
                    json!({ "room_id": room_id, "conversation": conversation, "messages": messages }),
                );
            }
        }
    }
}

/// The messages of every conversation, one row each after the header row.
fn csv(conversations: &[Value]) -> Result<Vec<u8>, Failure> {
    let fail = |e: csv::Error| Failure::local(format!("cannot write CSV: {e}"));
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    writer.write_record(COLUMNS).map_err(fail)?;
    for conversation in conversations {
        for message in conversation["messages"].as_array().into_iter().flatten() {
            let row = COLUMNS.iter().map(|column| match *column {
                "room_id" => field(&conversation["room_id"]),
                name => field(&message[name]),
            });
            writer.write_record(row).map_err(fail)?;
        }
    }
    writer
        .into_inner()
        .map_err(|e| Failure::local(format!("cannot write CSV: {e}")))
}

/// A JSON value as a CSV field: text as it is, nothing for absent.
fn field(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it_and_reads_back_the_same() {
        let bodies = [
            "plain",
            "a, comma",
            "a \"quote\"",
            "two\nlines\r\nand CRLF",
            "ñandú — 你好 👋",
            "",
        ];
        let messages: Vec<Value> = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| {
                json!({ "event_id": format!("$e{i}"), "sender": "@a:x", "body": body,
                        "origin_server_ts": 5, "edited": false })
            })
            .collect();
        let conversations = [json!({ "room_id": "!r:x", "messages": messages })];
        let bytes = csv(&conversations).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("room_id,event_id,type,sender,"));
        assert!(text.contains("\"a, comma\""));
        assert!(text.contains("\"a \"\"quote\"\"\""));
        let mut reader = csv::Reader::from_reader(bytes.as_slice());
        assert_eq!(reader.headers().unwrap(), COLUMNS.to_vec());
        let read: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(read.len(), bodies.len());
        for (record, body) in read.iter().zip(bodies) {
            assert_eq!(&record[0], "!r:x");
            assert_eq!(&record[8], body);
            assert_eq!(&record[5], "5");
            assert_eq!(&record[12], "false");
            assert_eq!(&record[4], "");
        }
    }
}
