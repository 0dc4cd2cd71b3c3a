//! `/thirdparty/*`: protocols and lookups answered by the appservices that serve each protocol.
//! Two fake bridges serve `whatsapp` (one also `telegram`); a third registered for `whatsapp`
//! is down, and must not break anything. The fakes record what the homeserver asked them.

use std::sync::{Arc, Mutex};

use axum::{
    Json, Router,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};

use crate::common::{Client, TestServer, V3, assert_error, enc};

/// What one fake bridge was asked: (path, raw query, Authorization header).
type Asked = Arc<Mutex<Vec<(String, String, String)>>>;

#[derive(Clone)]
struct Bridge {
    name: &'static str,
    hs_token: &'static str,
    asked: Asked,
}

fn whatsapp_protocol(icon: &str, instances: Value) -> Value {
    json!({
        "user_fields": ["number"],
        "location_fields": ["number"],
        "icon": icon,
        "field_types": { "number": { "regexp": "\\+?[0-9]+", "placeholder": "+34600111222" } },
        "instances": instances,
    })
}

async fn answer(
    State(b): State<Bridge>,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    b.asked.lock().unwrap().push((
        path.clone(),
        query.clone().unwrap_or_default(),
        auth.clone(),
    ));
    if auth != format!("Bearer {}", b.hs_token) {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({ "errcode": "M_FORBIDDEN" })),
        )
            .into_response();
    }
    let query: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let q = |k: &str| {
        query
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let body = match (b.name, path.as_str()) {
        ("bridge_a", "protocol/whatsapp") => whatsapp_protocol(
            "mxc://localhost/wa",
            json!([{ "desc": "WhatsApp Spain", "network_id": "es", "fields": {} }]),
        ),
        ("bridge_a", "protocol/telegram") => json!({
            "user_fields": ["username"], "location_fields": [], "icon": "mxc://localhost/tg",
            "field_types": {}, "instances": []
        }),
        ("bridge_b", "protocol/whatsapp") => whatsapp_protocol(
            "mxc://localhost/other",
            json!([
                { "desc": "WhatsApp Mexico", "network_id": "mx", "fields": {} },
                { "desc": "No network", "fields": {} }
            ]),
        ),
        ("bridge_a", "user/whatsapp") => json!([
            { "userid": "@whatsapp_34600111222:localhost", "protocol": "whatsapp",
              "fields": { "number": q("number") } },
            { "userid": 42, "protocol": "whatsapp", "fields": {} },
            { "userid": "@no_fields:localhost", "protocol": "whatsapp" }
        ]),
        ("bridge_b", "user/whatsapp") => json!([
            { "userid": "@wa_mx:localhost", "protocol": "whatsapp", "fields": { "number": q("number") } }
        ]),
        ("bridge_a", "location/whatsapp") => json!([
            { "alias": "#whatsapp_es:localhost", "protocol": "whatsapp", "fields": { "number": "1" } }
        ]),
        ("bridge_b", "location/whatsapp") => json!({ "not": "a list" }),
        ("bridge_a", "location/telegram") => json!([]),
        ("bridge_a", "user") => json!([
            { "userid": q("userid"), "protocol": "whatsapp", "fields": { "number": "+34600111222" } }
        ]),
        ("bridge_b", "user") => return (StatusCode::OK, "not json").into_response(),
        ("bridge_a", "location") => json!([
            { "alias": q("alias"), "protocol": "whatsapp", "fields": { "number": "1" } }
        ]),
        ("bridge_b", "location") => {
            return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({}))).into_response();
        }
        _ => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({ "errcode": "M_NOT_FOUND" })),
            )
                .into_response();
        }
    };
    Json(body).into_response()
}

async fn start_bridge(name: &'static str, hs_token: &'static str) -> (String, Asked) {
    let asked = Asked::default();
    let bridge = Bridge {
        name,
        hs_token,
        asked: asked.clone(),
    };
    let app = Router::new()
        .route("/_matrix/app/v1/thirdparty/{*path}", get(answer))
        .with_state(bridge);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, asked)
}

fn registration(id: &str, url: &str, protocols: &str) -> String {
    format!(
        "id: {id}\nurl: {url}\nas_token: as-{id}\nhs_token: hs-{id}\n\
         sender_localpart: {id}_bot\nrate_limited: false\nprotocols: {protocols}\n\
         namespaces:\n  users:\n    - exclusive: true\n      regex: '@{id}_.*:localhost'\n  \
         aliases: []\n  rooms: []\n"
    )
}

struct Setup {
    server: TestServer,
    alice: Client,
    a: Asked,
    b: Asked,
}

async fn setup() -> Setup {
    let (url_a, a) = start_bridge("bridge_a", "hs-bridge_a").await;
    let (url_b, b) = start_bridge("bridge_b", "hs-bridge_b").await;
    // A bridge that is down: its port was bound and closed.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let dir = tempfile::tempdir().unwrap().keep();
    let mut files = Vec::new();
    for (id, url, protocols) in [
        ("bridge_a", url_a.as_str(), "[whatsapp, telegram]"),
        ("bridge_b", url_b.as_str(), "[whatsapp]"),
        ("bridge_down", down.as_str(), "[whatsapp]"),
    ] {
        let file = dir.join(format!("{id}.yaml"));
        std::fs::write(&file, registration(id, url, protocols)).unwrap();
        files.push(format!("{file:?}"));
    }
    let server = TestServer::start_with(&format!(
        "[appservice]\nregistrations = [{}]\n",
        files.join(", ")
    ))
    .await;
    let alice = server.user("alice").await;
    Setup {
        server,
        alice,
        a,
        b,
    }
}

fn asked(log: &Asked) -> Vec<(String, String, String)> {
    log.lock().unwrap().clone()
}

#[tokio::test]
async fn protocols_merge_instances_of_every_bridge_with_instance_ids() {
    let t = setup().await;
    let whatsapp = json!({
        "user_fields": ["number"],
        "location_fields": ["number"],
        "icon": "mxc://localhost/wa",
        "field_types": { "number": { "regexp": "\\+?[0-9]+", "placeholder": "+34600111222" } },
        "instances": [
            { "desc": "WhatsApp Spain", "network_id": "es", "fields": {}, "instance_id": "bridge_a|es" },
            { "desc": "WhatsApp Mexico", "network_id": "mx", "fields": {}, "instance_id": "bridge_b|mx" },
            { "desc": "No network", "fields": {} }
        ]
    });
    let (status, body) = t.alice.get(&format!("{V3}/thirdparty/protocols")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({
            "whatsapp": whatsapp,
            "telegram": {
                "user_fields": ["username"], "location_fields": [], "icon": "mxc://localhost/tg",
                "field_types": {}, "instances": []
            }
        })
    );
    assert_eq!(
        asked(&t.a),
        vec![
            (
                "protocol/whatsapp".into(),
                "".into(),
                "Bearer hs-bridge_a".into()
            ),
            (
                "protocol/telegram".into(),
                "".into(),
                "Bearer hs-bridge_a".into()
            ),
        ]
    );
    assert_eq!(
        asked(&t.b),
        vec![(
            "protocol/whatsapp".into(),
            "".into(),
            "Bearer hs-bridge_b".into()
        )]
    );

    // The metadata is reused: nothing is asked again.
    let (status, body) = t
        .alice
        .get("/_matrix/client/r0/thirdparty/protocol/whatsapp")
        .await;
    assert_eq!((status, body), (200, whatsapp));
    assert_eq!((asked(&t.a).len(), asked(&t.b).len()), (2, 1));
    let (status, body) = t.alice.get(&format!("{V3}/thirdparty/protocol/irc")).await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    assert_eq!((asked(&t.a).len(), asked(&t.b).len()), (2, 1));
}

#[tokio::test]
async fn lookups_concatenate_the_valid_results_of_the_protocol_bridges() {
    let t = setup().await;
    // The token in the query authenticates Alice and is not passed on as a field.
    let token = t.alice.token.clone().unwrap();
    let mut anonymous = t.server.client();
    anonymous.token = None;
    let (status, body) = anonymous
        .get(&format!(
            "{V3}/thirdparty/user/whatsapp?number=%2B34600111222&access_token={token}"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!([
            { "userid": "@whatsapp_34600111222:localhost", "protocol": "whatsapp",
              "fields": { "number": "+34600111222" } },
            { "userid": "@wa_mx:localhost", "protocol": "whatsapp",
              "fields": { "number": "+34600111222" } }
        ])
    );
    let want = (
        "user/whatsapp".to_owned(),
        "number=%2B34600111222".to_owned(),
    );
    let a = asked(&t.a);
    assert_eq!((a[0].0.clone(), a[0].1.clone()), want);
    let b = asked(&t.b);
    assert_eq!((b[0].0.clone(), b[0].1.clone()), want);

    let (status, body) = t
        .alice
        .get(&format!("{V3}/thirdparty/location/whatsapp?number=1"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!([{ "alias": "#whatsapp_es:localhost", "protocol": "whatsapp", "fields": { "number": "1" } }])
    );
    let (status, body) = t
        .alice
        .get(&format!("{V3}/thirdparty/location/telegram"))
        .await;
    assert_eq!((status, body), (200, json!([])));
    assert_eq!(asked(&t.b).len(), 2, "bridge_b does not serve telegram");

    // An appservice asserting a user: `user_id` addresses Charla and is not a field.
    let mut bridge_client = t.server.client();
    bridge_client.token = Some("as-bridge_a".into());
    let (status, _) = bridge_client
        .get(&format!(
            "{V3}/thirdparty/user/whatsapp?user_id=%40bridge_a_bot%3Alocalhost&number=7"
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(asked(&t.b).last().unwrap().1, "number=7");

    for path in ["user/irc", "location/irc"] {
        let (status, body) = t.alice.get(&format!("{V3}/thirdparty/{path}")).await;
        assert_error(status, &body, 404, "M_NOT_FOUND");
    }
}

#[tokio::test]
async fn reverse_lookups_ask_every_bridge_and_need_a_valid_id() {
    let t = setup().await;
    let user = "@whatsapp_34600111222:localhost";
    let (status, body) = t
        .alice
        .get(&format!("{V3}/thirdparty/user?userid={}", enc(user)))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!([{ "userid": user, "protocol": "whatsapp", "fields": { "number": "+34600111222" } }])
    );
    let alias = "#whatsapp_es:localhost";
    let (status, body) = t
        .alice
        .get(&format!("{V3}/thirdparty/location?alias={}", enc(alias)))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!([{ "alias": alias, "protocol": "whatsapp", "fields": { "number": "1" } }])
    );
    let b: Vec<String> = asked(&t.b)
        .into_iter()
        .map(|(p, q, _)| format!("{p}?{q}"))
        .collect();
    assert_eq!(
        b,
        vec![
            format!("user?userid={}", enc(user)),
            format!("location?alias={}", enc(alias)),
        ]
    );

    let (status, body) = t.alice.get(&format!("{V3}/thirdparty/user")).await;
    assert_error(status, &body, 400, "M_MISSING_PARAM");
    let (status, body) = t.alice.get(&format!("{V3}/thirdparty/location")).await;
    assert_error(status, &body, 400, "M_MISSING_PARAM");
    let (status, body) = t
        .alice
        .get(&format!("{V3}/thirdparty/user?userid=bob"))
        .await;
    assert_error(status, &body, 400, "M_INVALID_PARAM");
    let (status, body) = t
        .alice
        .get(&format!(
            "{V3}/thirdparty/location?alias=%21room%3Alocalhost"
        ))
        .await;
    assert_error(status, &body, 400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn every_endpoint_needs_a_token_and_no_bridge_means_nothing() {
    let t = setup().await;
    let anonymous = t.server.client();
    for path in [
        "protocols",
        "protocol/whatsapp",
        "user/whatsapp",
        "location/whatsapp",
        "user?userid=%40a%3Alocalhost",
        "location?alias=%23a%3Alocalhost",
    ] {
        let (status, body) = anonymous.get(&format!("{V3}/thirdparty/{path}")).await;
        assert_error(status, &body, 401, "M_MISSING_TOKEN");
    }
    assert!(asked(&t.a).is_empty() && asked(&t.b).is_empty());

    let plain = TestServer::start().await;
    let bob = plain.user("bob").await;
    let (status, body) = bob.get(&format!("{V3}/thirdparty/protocols")).await;
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = bob
        .get(&format!("{V3}/thirdparty/user?userid=%40a%3Alocalhost"))
        .await;
    assert_eq!((status, body), (200, json!([])));
}

/// A bridge built on Charla's own appservice toolkit, answering through its `Handler`.
struct ToolkitBridge;

impl appservice::Handler for ToolkitBridge {
    async fn thirdparty_protocol(
        &self,
        protocol: &str,
    ) -> Result<Option<ruma::thirdparty::Protocol>, appservice::HandlerError> {
        let instance: ruma::thirdparty::ProtocolInstance = ruma::thirdparty::ProtocolInstanceInit {
            desc: "WhatsApp Spain".into(),
            fields: Default::default(),
            network_id: "es".into(),
        }
        .into();
        Ok((protocol == "whatsapp").then(|| {
            ruma::thirdparty::ProtocolInit {
                user_fields: vec!["number".into()],
                location_fields: vec![],
                icon: "mxc://localhost/wa".into(),
                field_types: Default::default(),
                instances: vec![instance],
            }
            .into()
        }))
    }

    async fn thirdparty_users(
        &self,
        protocol: Option<&str>,
        fields: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<ruma::thirdparty::User>, appservice::HandlerError> {
        let number = fields.get("number").cloned().unwrap_or_default();
        Ok(match (protocol, number.as_str()) {
            (Some("whatsapp"), "+34600111222") => vec![ruma::thirdparty::User::new(
                ruma::owned_user_id!("@tk_34600111222:localhost"),
                "whatsapp".into(),
                fields.clone(),
            )],
            _ => vec![],
        })
    }
}

#[tokio::test]
async fn a_bridge_built_on_the_toolkit_answers_through_charla() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut registration = appservice::Registration::generate(
        "tk",
        Some(url),
        "tk_bot",
        appservice::Namespaces {
            users: vec![appservice::Namespace::new("@tk_.*:localhost", true)],
            ..Default::default()
        },
    );
    registration.protocols = Some(vec!["whatsapp".into()]);
    let file = dir.path().join("tk.yaml");
    registration.write_file(&file).unwrap();
    let server =
        TestServer::start_with(&format!("[appservice]\nregistrations = [{file:?}]\n")).await;
    let bridge = appservice::AppService::builder(
        registration,
        &server.server.base_url(),
        ruma::server_name!("localhost"),
    )
    .state_dir(dir.path().join("bridge"))
    .build(ToolkitBridge)
    .unwrap();
    tokio::spawn(async move {
        bridge
            .serve_until(listener, std::future::pending::<()>())
            .await
    });
    let alice = server.user("alice").await;

    let (status, body) = alice.get(&format!("{V3}/thirdparty/protocols")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({ "whatsapp": {
            "user_fields": ["number"], "location_fields": [], "icon": "mxc://localhost/wa",
            "field_types": {},
            "instances": [
                { "desc": "WhatsApp Spain", "fields": {}, "network_id": "es", "instance_id": "tk|es" }
            ]
        }})
    );
    let (status, body) = alice
        .get(&format!(
            "{V3}/thirdparty/user/whatsapp?number=%2B34600111222"
        ))
        .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!([{ "userid": "@tk_34600111222:localhost", "protocol": "whatsapp",
                     "fields": { "number": "+34600111222" } }])
        )
    );
    // The toolkit answers an empty lookup with the spec's 404; Charla shows an empty list.
    let (status, body) = alice
        .get(&format!("{V3}/thirdparty/user/whatsapp?number=%2B1"))
        .await;
    assert_eq!((status, body), (200, json!([])));
    let (status, body) = alice
        .get(&format!("{V3}/thirdparty/location/whatsapp"))
        .await;
    assert_eq!((status, body), (200, json!([])));
}
