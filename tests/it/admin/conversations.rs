//! `conversation …` and `ticket …`: the desk's conversations and tickets as an administrator
//! sees them, and the export of a conversation's history (JSON and CSV).

use serde_json::{Value, json};

use super::{AdminCli, admin_client};
use crate::{
    common::{Client, V3, assert_error, enc},
    media::upload,
    support::{API, desk},
};

/// Bodies that CSV must quote, or carry as they are.
const BODIES: [&str; 5] = [
    "Hola, necesito ayuda",
    "Dijo \"mañana\", y nada",
    "línea uno\nlínea dos\r\nlínea tres",
    "ñandú — 你好 👋",
    "plain",
];

/// A conversation the boss opens with a customer, who joins.
async fn conversation_with(boss: &Client, customer: &Client, name: &str) -> String {
    let (status, body) = boss
        .post(
            &format!("{API}/conversations"),
            json!({ "participants": [customer.user_id(name)], "name": "Order 77",
                    "contact": { "id": customer.user_id(name), "name": name } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let room = body["room_id"].as_str().unwrap().to_owned();
    assert_eq!(customer.join(&room).await.0, 200);
    room
}

fn ids(list: &Value, key: &str, field: &str) -> Vec<String> {
    list[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[field].to_string().trim_matches('"').to_owned())
        .collect()
}

#[tokio::test]
async fn conversations_are_listed_shown_assigned_and_closed() {
    let d = desk().await;
    let cli = AdminCli::of(&d.s);
    let carla = d.s.user("carla").await;
    let dani = d.s.user("dani").await;
    let room = conversation_with(&d.boss, &carla, "carla").await;
    let other = conversation_with(&d.boss, &dani, "dani").await;
    carla.send_text(&room, "t1", "¿Dónde está mi pedido?").await;

    let all = cli.json(&["conversation", "list"]).await;
    let mut listed = ids(&all, "conversations", "room_id");
    listed.sort();
    let mut expected = vec![room.clone(), other.clone()];
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(all["total"], 2);

    let shown = cli.json(&["conversation", "show", &room]).await;
    assert_eq!(shown["room_id"], room.as_str());
    assert_eq!(shown["status"], "open");
    assert_eq!(shown["contact"]["id"], "@carla:localhost");
    let said: Vec<&Value> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| &e["content"]["body"])
        .collect();
    assert!(said.contains(&&json!("¿Dónde está mi pedido?")), "{said:?}");

    let assigned = cli
        .json(&["conversation", "assign", &room, "@bob:localhost"])
        .await;
    assert_eq!(assigned["assignee"], "@bob:localhost");
    let mine = cli
        .json(&["conversation", "list", "--assignee", "@bob:localhost"])
        .await;
    assert_eq!(ids(&mine, "conversations", "room_id"), [room.as_str()]);
    // Only staff can be assigned: the server refuses, the CLI exits 1 with its reason.
    let reason = cli
        .fails(&["conversation", "assign", &room, "@carla:localhost"], 1)
        .await;
    assert!(reason.contains("not an agent"), "{reason}");

    let closed = cli.json(&["conversation", "close", &room]).await;
    assert_eq!(closed["status"], "closed");
    let closed = cli
        .json(&["conversation", "list", "--status", "closed"])
        .await;
    assert_eq!(ids(&closed, "conversations", "room_id"), [room.as_str()]);
    let open = cli
        .json(&["conversation", "list", "--status", "open"])
        .await;
    assert_eq!(ids(&open, "conversations", "room_id"), [other.as_str()]);
    // The table for people names the room; a bad filter is the server's 400.
    let table = cli.run(&["conversation", "list"]).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.contains(&room) && table.stdout.contains("closed"));
    cli.fails(&["conversation", "list", "--status", "sleepy"], 1)
        .await;
    cli.fails(&["conversation", "show", "!nope:localhost"], 1)
        .await;

    // Audited as the admin token's changes.
    let (_, audit) = d.boss.get(&format!("{API}/audit")).await;
    let actions: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["via"] == "admin_token")
        .map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    assert!(actions.contains(&("conversation.assign", room.as_str())));
    assert!(actions.contains(&("conversation.close", room.as_str())));
}

#[tokio::test]
async fn tickets_are_listed_shown_and_updated() {
    let d = desk().await;
    let cli = AdminCli::of(&d.s);
    let carla = d.s.user("carla").await;
    let room = conversation_with(&d.boss, &carla, "carla").await;
    let (status, ticket) = d
        .boss
        .post(
            &format!("{API}/tickets"),
            json!({ "room_id": room, "title": "Broken screen" }),
        )
        .await;
    assert_eq!(status, 200, "{ticket}");
    let number = ticket["number"].as_u64().unwrap().to_string();

    let list = cli.json(&["ticket", "list"]).await;
    assert_eq!(ids(&list, "tickets", "number"), [number.as_str()]);
    assert_eq!(list["tickets"][0]["title"], "Broken screen");
    let none = cli.json(&["ticket", "list", "--status", "resolved"]).await;
    assert_eq!(none["tickets"], json!([]));

    let shown = cli.json(&["ticket", "show", &number]).await;
    assert_eq!(shown["status"], "open");
    assert_eq!(shown["room_id"], room.as_str());

    let updated = cli
        .json(&[
            "ticket",
            "update",
            &number,
            "--status",
            "in_progress",
            "--priority",
            "high",
            "--assignee",
            "@bob:localhost",
        ])
        .await;
    assert_eq!(updated["status"], "in_progress");
    assert_eq!(updated["priority"], "high");
    assert_eq!(updated["assignee"], "@bob:localhost");
    let bobs = cli
        .json(&["ticket", "list", "--assignee", "@bob:localhost"])
        .await;
    assert_eq!(ids(&bobs, "tickets", "number"), [number.as_str()]);
    let unassigned = cli
        .json(&["ticket", "update", &number, "--assignee", "none"])
        .await;
    assert_eq!(unassigned["assignee"], Value::Null);

    cli.fails(&["ticket", "update", &number], 1).await;
    let reason = cli
        .fails(&["ticket", "update", &number, "--status", "done"], 1)
        .await;
    assert!(reason.contains("M_INVALID_PARAM"), "{reason}");
    cli.fails(&["ticket", "show", "999"], 1).await;
    let shown = cli.json(&["ticket", "show", &number]).await;
    assert_eq!(shown["status"], "in_progress");
}

#[tokio::test]
async fn an_export_has_every_message_as_it_reads_in_csv_and_json() {
    let d = desk().await;
    let cli = AdminCli::of(&d.s);
    let carla = d.s.user("carla").await;
    let (status, _) = carla
        .put(
            &format!("{V3}/profile/@carla:localhost/displayname"),
            json!({ "displayname": "Carla Gómez" }),
        )
        .await;
    assert_eq!(status, 200);
    let room = conversation_with(&d.boss, &carla, "carla").await;
    let mut sent = Vec::new();
    for (i, body) in BODIES.iter().enumerate() {
        sent.push(carla.send_text(&room, &format!("b{i}"), body).await);
    }
    // An edit reads as its message; a redacted message keeps its place without its text.
    carla
        .send_message(
            &room,
            "edit",
            json!({ "msgtype": "m.text", "body": "* plain, edited",
                    "m.new_content": { "msgtype": "m.text", "body": "plain, edited" },
                    "m.relates_to": { "rel_type": "m.replace", "event_id": sent[4] } }),
        )
        .await;
    let secret = carla
        .send_text(&room, "secret", "my card is ZQXJ-VISA")
        .await;
    let (status, body) = carla
        .put(
            &format!("{V3}/rooms/{}/redact/{}/r1", enc(&room), enc(&secret)),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let media = upload(
        &carla,
        "?filename=receipt.png",
        "image/png",
        b"png!".to_vec(),
    )
    .await;
    let image = carla
        .send_message(
            &room,
            "img",
            json!({ "msgtype": "m.image", "body": "receipt.png",
                    "url": format!("mxc://localhost/{media}") }),
        )
        .await;

    let dir = tempfile::tempdir().unwrap();
    let csv_path = dir.path().join("export.csv");
    let run = cli
        .run(&[
            "conversation",
            "export",
            &room,
            "--format",
            "csv",
            "--output",
            csv_path.to_str().unwrap(),
        ])
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "", "--output writes the file, not stdout");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let mut reader = csv::Reader::from_path(&csv_path).unwrap();
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let carlas: Vec<&csv::StringRecord> = rows
        .iter()
        .filter(|r| &r[column("sender")] == "@carla:localhost")
        .collect();
    let bodies: Vec<&str> = carlas.iter().map(|r| &r[column("body")]).collect();
    let mut expected: Vec<&str> = BODIES[..4].to_vec();
    expected.extend(["plain, edited", "", "receipt.png"]);
    assert_eq!(bodies, expected);
    let events: Vec<&str> = carlas.iter().map(|r| &r[column("event_id")]).collect();
    assert_eq!(
        events[..5],
        sent.iter().map(String::as_str).collect::<Vec<_>>()[..]
    );
    assert_eq!(events[5..], [secret.as_str(), image.as_str()]);
    for row in &carlas {
        assert_eq!(&row[column("room_id")], room.as_str());
        assert_eq!(&row[column("sender_name")], "Carla Gómez");
        assert!(row[column("time")].ends_with('Z'), "{row:?}");
    }
    assert_eq!(&carlas[4][column("edited")], "true");
    assert_eq!(&carlas[0][column("edited")], "false");
    assert_eq!(&carlas[5][column("redacted")], "true");
    assert_eq!(&carlas[6][column("msgtype")], "m.image");
    assert_eq!(
        &carlas[6][column("media_url")],
        format!("mxc://localhost/{media}")
    );
    // The download URL serves the media to an access token.
    let download = &carlas[6][column("download_url")];
    let path = format!("/_matrix/client/v1/media/download/localhost/{media}");
    assert!(download.ends_with(&path), "{download}");
    let got = reqwest::Client::new()
        .get(d.s.url(&path))
        .bearer_auth(d.boss.token.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"png!");

    // JSON: one document with every conversation named and the same messages, on stdout.
    let dani = d.s.user("dani").await;
    let other = conversation_with(&d.boss, &dani, "dani").await;
    dani.send_text(&other, "d1", "otra, cosa").await;
    let run = cli
        .run(&["conversation", "export", &room, &other, "--format", "json"])
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let document: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(document["conversations"][1]["room_id"], other.as_str());
    let dani_said: Vec<&Value> = document["conversations"][1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["sender"] == "@dani:localhost")
        .map(|m| &m["body"])
        .collect();
    assert_eq!(dani_said, [&json!("otra, cosa")]);
    let exported = &document["conversations"][0];
    assert_eq!(exported["room_id"], room.as_str());
    assert_eq!(
        exported["conversation"]["contact"]["id"],
        "@carla:localhost"
    );
    let messages = exported["messages"].as_array().unwrap();
    assert_eq!(messages.len(), rows.len());
    let redacted = messages.iter().find(|m| m["event_id"] == secret.as_str());
    assert_eq!(redacted.unwrap()["body"], Value::Null);
    assert!(!run.stdout.contains("ZQXJ"), "a redacted text leaks");

    // The server pages the history: small pages give the same messages, in order.
    let admin = admin_client(&d.s);
    let mut paged = Vec::new();
    let mut from = String::new();
    loop {
        let (status, page) = admin
            .get(&format!(
                "/_charla/admin/v1/conversations/{}/export?limit=3{from}",
                enc(&room)
            ))
            .await;
        assert_eq!(status, 200, "{page}");
        paged.extend(page["messages"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => from = format!("&from={next}"),
            None => break,
        }
    }
    assert_eq!(&paged, messages);
    let (status, body) = admin
        .get(&format!(
            "/_charla/admin/v1/conversations/{}/export?limit=0",
            enc(&room)
        ))
        .await;
    assert_error(status, &body, 400, "M_INVALID_PARAM");
    assert_eq!(body["field"], "limit");
}

#[tokio::test]
async fn the_desk_endpoints_refuse_everyone_but_administrators() {
    let d = desk().await;
    let carla = d.s.user("carla").await;
    let room = conversation_with(&d.boss, &carla, "carla").await;
    let r = enc(&room);
    let anonymous = d.s.client();
    let endpoints = [
        (reqwest::Method::GET, "/conversations".to_owned()),
        (reqwest::Method::GET, format!("/conversations/{r}")),
        (reqwest::Method::POST, format!("/conversations/{r}/assign")),
        (reqwest::Method::POST, format!("/conversations/{r}/close")),
        (reqwest::Method::GET, format!("/conversations/{r}/export")),
        (reqwest::Method::GET, "/tickets".to_owned()),
        (reqwest::Method::GET, "/tickets/1".to_owned()),
        (reqwest::Method::PATCH, "/tickets/1".to_owned()),
        (reqwest::Method::GET, "/appservices".to_owned()),
        (reqwest::Method::POST, "/appservices".to_owned()),
        (reqwest::Method::DELETE, "/appservices/x".to_owned()),
        (reqwest::Method::POST, "/appservices/x/ping".to_owned()),
        (
            reqwest::Method::PUT,
            format!("/users/{}/role", enc("@carla:localhost")),
        ),
    ];
    for (method, path) in endpoints {
        let path = format!("/_charla/admin/v1{path}");
        let body = br#"{"role": "admin", "user_id": "@ana:localhost"}"#.to_vec();
        // An agent of the desk is no administrator, nor is a customer.
        for who in [&carla, &d.ana] {
            let (status, answer) = who.raw(method.clone(), &path, body.clone()).await;
            assert_error(status, &answer, 403, "M_FORBIDDEN");
        }
        let (status, answer) = anonymous.raw(method.clone(), &path, body).await;
        assert_error(status, &answer, 401, "M_MISSING_TOKEN");
    }
    // Nothing changed: carla has no role, the conversation is open and unassigned.
    let (_, conversation) = d.boss.get(&format!("{API}/conversations/{r}")).await;
    assert_eq!(conversation["status"], "open");
    assert_eq!(conversation["assignee"], Value::Null);
    let (status, _) = carla.get(&format!("{API}/tickets")).await;
    assert_eq!(status, 403);
    // The config's desk admin is an administrator.
    let (status, body) = d.boss.get("/_charla/admin/v1/conversations").await;
    assert_eq!(status, 200, "{body}");
}
