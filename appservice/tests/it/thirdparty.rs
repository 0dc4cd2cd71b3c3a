//! `/_matrix/app/v1/thirdparty/*` over real HTTP: a bridge implementing the optional handler
//! methods, one that implements none (404 everywhere), and the `hs_token` checks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use appservice::{Handler, HandlerError};
use ruma::thirdparty::{
    FieldType, FieldTypeInit, Location, Protocol, ProtocolInit, ProtocolInstance,
    ProtocolInstanceInit, User,
};
use ruma::{owned_room_alias_id, owned_user_id};
use serde_json::json;

use crate::common::server::*;

/// One lookup as the handler saw it: the protocol (none for reverse lookups) and the fields.
type Lookup = (Option<String>, BTreeMap<String, String>);

/// A WhatsApp-like bridge; records every lookup.
#[derive(Default)]
struct Bridge {
    lookups: Mutex<Vec<Lookup>>,
}

impl Handler for Bridge {
    async fn thirdparty_protocol(&self, protocol: &str) -> Result<Option<Protocol>, HandlerError> {
        if protocol != "whatsapp" {
            return Ok(None);
        }
        let number: FieldType = FieldTypeInit {
            regexp: "\\+?[0-9]+".into(),
            placeholder: "+34600111222".into(),
        }
        .into();
        let instance: ProtocolInstance = ProtocolInstanceInit {
            desc: "WhatsApp Spain".into(),
            fields: BTreeMap::new(),
            network_id: "es".into(),
        }
        .into();
        Ok(Some(
            ProtocolInit {
                user_fields: vec!["number".into()],
                location_fields: vec![],
                icon: "mxc://example.org/wa".into(),
                field_types: BTreeMap::from([("number".into(), number)]),
                instances: vec![instance],
            }
            .into(),
        ))
    }

    async fn thirdparty_users(
        &self,
        protocol: Option<&str>,
        fields: &BTreeMap<String, String>,
    ) -> Result<Vec<User>, HandlerError> {
        self.lookups
            .lock()
            .unwrap()
            .push((protocol.map(str::to_owned), fields.clone()));
        if fields.get("number").map(String::as_str) == Some("fail") {
            return Err("the network is down".into());
        }
        let known = fields.get("number").map(String::as_str) == Some("+34600111222")
            || fields.get("userid").map(String::as_str) == Some("@_wa_34600111222:example.org");
        Ok(if known {
            vec![User::new(
                owned_user_id!("@_wa_34600111222:example.org"),
                "whatsapp".into(),
                BTreeMap::from([("number".into(), "+34600111222".into())]),
            )]
        } else {
            vec![]
        })
    }

    async fn thirdparty_locations(
        &self,
        protocol: Option<&str>,
        fields: &BTreeMap<String, String>,
    ) -> Result<Vec<Location>, HandlerError> {
        self.lookups
            .lock()
            .unwrap()
            .push((protocol.map(str::to_owned), fields.clone()));
        Ok(vec![Location::new(
            owned_room_alias_id!("#_wa_es:example.org"),
            "whatsapp".into(),
            BTreeMap::new(),
        )])
    }
}

const TP: &str = "/_matrix/app/v1/thirdparty";

#[tokio::test]
async fn a_bridge_answers_protocol_metadata_and_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = Arc::new(Bridge::default());
    let app = start(dir.path(), bridge.clone()).await;
    let get = |path: &str| {
        let url = format!("{}{TP}{path}", app.base);
        async move { call("GET", &url, Some("HS_SECRET"), None).await }
    };

    assert_eq!(
        get("/protocol/whatsapp").await,
        (
            200,
            json!({
                "user_fields": ["number"],
                "location_fields": [],
                "icon": "mxc://example.org/wa",
                "field_types": { "number": { "regexp": "\\+?[0-9]+", "placeholder": "+34600111222" } },
                "instances": [{ "desc": "WhatsApp Spain", "fields": {}, "network_id": "es" }]
            })
        )
    );
    let (status, body) = get("/protocol/irc").await;
    assert_eq!((status, &body["errcode"]), (404, &json!("M_NOT_FOUND")));

    let user = json!([{
        "userid": "@_wa_34600111222:example.org",
        "protocol": "whatsapp",
        "fields": { "number": "+34600111222" }
    }]);
    assert_eq!(
        get("/user/whatsapp?number=%2B34600111222&access_token=HS_SECRET").await,
        (200, user.clone())
    );
    assert_eq!(
        get("/user?userid=%40_wa_34600111222%3Aexample.org&extra=dropped").await,
        (200, user)
    );
    let (status, body) = get("/user/whatsapp?number=%2B1").await;
    assert_eq!((status, &body["errcode"]), (404, &json!("M_NOT_FOUND")));
    let (status, body) = get("/user/whatsapp?number=fail").await;
    assert_eq!((status, &body["errcode"]), (500, &json!("M_UNKNOWN")));
    let (status, body) = get("/user").await;
    assert_eq!((status, &body["errcode"]), (400, &json!("M_MISSING_PARAM")));
    assert_eq!(
        get("/location?alias=%23_wa_es%3Aexample.org").await,
        (
            200,
            json!([{ "alias": "#_wa_es:example.org", "protocol": "whatsapp", "fields": {} }])
        )
    );

    let field = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
    assert_eq!(
        *bridge.lookups.lock().unwrap(),
        vec![
            (Some("whatsapp".into()), field("number", "+34600111222")),
            (None, field("userid", "@_wa_34600111222:example.org")),
            (Some("whatsapp".into()), field("number", "+1")),
            (Some("whatsapp".into()), field("number", "fail")),
            (None, field("alias", "#_wa_es:example.org")),
        ]
    );
    app.shut_down().await;
}

#[tokio::test]
async fn without_third_party_methods_everything_is_not_found_and_tokens_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(dir.path(), Arc::new(Recorder::default())).await;
    for path in [
        "/protocol/whatsapp",
        "/user/whatsapp?number=1",
        "/location/whatsapp",
        "/user?userid=%40a%3Aexample.org",
        "/location?alias=%23a%3Aexample.org",
    ] {
        let url = format!("{}{TP}{path}", app.base);
        let (status, body) = call("GET", &url, Some("HS_SECRET"), None).await;
        assert_eq!(
            (status, &body["errcode"]),
            (404, &json!("M_NOT_FOUND")),
            "{path}"
        );
        assert_eq!(call("GET", &url, None, None).await, (401, unauthorized()));
        assert_eq!(
            call("GET", &url, Some("WRONG"), None).await,
            (403, forbidden())
        );
    }
    app.shut_down().await;
}
