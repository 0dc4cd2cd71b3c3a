//! Push rules: the default set, a custom rule's lifecycle, what account data may not set, and
//! the rules in the first sync.

use serde_json::{Value, json};

use crate::common::{TestServer, V3, assert_error, enc};

fn rule_ids(ruleset: &Value, kind: &str) -> Vec<String> {
    ruleset[kind]
        .as_array()
        .unwrap_or_else(|| panic!("{kind} missing: {ruleset}"))
        .iter()
        .map(|r| r["rule_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn push_rules_default_set() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let (status, body) = alice.get(&format!("{V3}/pushrules/")).await;
    assert_eq!(status, 200, "{body}");
    let global = &body["global"];
    // The predefined rules of v1.16, in the spec's priority order (the legacy mention rules
    // are deprecated but still listed; Synapse serves the same list).
    assert_eq!(
        rule_ids(global, "override"),
        [
            ".m.rule.master",
            ".m.rule.suppress_notices",
            ".m.rule.invite_for_me",
            ".m.rule.member_event",
            ".m.rule.is_user_mention",
            ".m.rule.contains_display_name",
            ".m.rule.is_room_mention",
            ".m.rule.roomnotif",
            ".m.rule.tombstone",
            ".m.rule.reaction",
            ".m.rule.room.server_acl",
            ".m.rule.suppress_edits",
        ]
    );
    assert_eq!(
        rule_ids(global, "underride"),
        [
            ".m.rule.call",
            ".m.rule.encrypted_room_one_to_one",
            ".m.rule.room_one_to_one",
            ".m.rule.message",
            ".m.rule.encrypted",
        ]
    );
    assert_eq!(
        global["content"],
        json!([{
            "rule_id": ".m.rule.contains_user_name", "default": true, "enabled": true,
            "pattern": "alice",
            "actions": ["notify", { "set_tweak": "sound", "value": "default" }, { "set_tweak": "highlight" }],
        }])
    );
    let message = global["underride"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule_id"] == ".m.rule.message")
        .unwrap();
    assert_eq!(
        message["conditions"],
        json!([{ "kind": "event_match", "key": "type", "pattern": "m.room.message" }])
    );
    assert_eq!(message["actions"], json!(["notify"]));
    let master = &global["override"][0];
    assert_eq!(master["enabled"], false);
    assert_eq!(master["default"], true);
    assert_eq!(master["actions"], json!([]));
    // No default room or sender rules (ruma leaves the empty lists out; Synapse sends `[]`).
    for kind in ["room", "sender"] {
        assert!(
            global[kind].as_array().is_none_or(|r| r.is_empty()),
            "{global}"
        );
    }

    // The global scope alone, and one rule.
    let (status, scope) = alice.get(&format!("{V3}/pushrules/global/")).await;
    assert_eq!(status, 200);
    assert_eq!(&scope, global);
    let (status, rule) = alice
        .get(&format!("{V3}/pushrules/global/override/.m.rule.master"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(&rule, master);
}

#[tokio::test]
async fn push_rules_custom_rule_lifecycle() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let base = format!("{V3}/pushrules/global/override");
    let rule = json!({
        "conditions": [{ "kind": "event_match", "key": "content.body", "pattern": "urgente" }],
        "actions": ["notify", { "set_tweak": "sound", "value": "default" }],
    });
    let (status, body) = alice
        .put(&format!("{base}/org.example.urgent"), rule.clone())
        .await;
    assert_eq!((status, body), (200, json!({})));
    let (status, got) = alice.get(&format!("{base}/org.example.urgent")).await;
    assert_eq!(status, 200);
    assert_eq!(
        got,
        json!({
            "rule_id": "org.example.urgent", "default": false, "enabled": true,
            "conditions": rule["conditions"], "actions": rule["actions"],
        })
    );
    // A new user rule goes before the server-default override rules but after none in particular.
    let (_, all) = alice.get(&format!("{V3}/pushrules/")).await;
    let ids = rule_ids(&all["global"], "override");
    assert!(ids.contains(&"org.example.urgent".to_owned()), "{ids:?}");

    // Insert another rule just before it.
    let (status, body) = alice
        .put(
            &format!("{base}/org.example.first?before=org.example.urgent"),
            json!({ "conditions": [], "actions": [] }),
        )
        .await;
    assert_eq!((status, body), (200, json!({})));
    let (_, all) = alice.get(&format!("{V3}/pushrules/")).await;
    let ids = rule_ids(&all["global"], "override");
    let first = ids.iter().position(|i| i == "org.example.first").unwrap();
    let urgent = ids.iter().position(|i| i == "org.example.urgent").unwrap();
    assert_eq!(first + 1, urgent, "{ids:?}");

    // Disable, re-read, enable.
    let (status, body) = alice
        .get(&format!("{base}/org.example.urgent/enabled"))
        .await;
    assert_eq!((status, body), (200, json!({ "enabled": true })));
    let (status, _) = alice
        .put(
            &format!("{base}/org.example.urgent/enabled"),
            json!({ "enabled": false }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = alice
        .get(&format!("{base}/org.example.urgent/enabled"))
        .await;
    assert_eq!(body, json!({ "enabled": false }));
    let (_, got) = alice.get(&format!("{base}/org.example.urgent")).await;
    assert_eq!(got["enabled"], false);

    // Change the actions.
    let (status, _) = alice
        .put(
            &format!("{base}/org.example.urgent/actions"),
            json!({ "actions": [] }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = alice
        .get(&format!("{base}/org.example.urgent/actions"))
        .await;
    assert_eq!(body, json!({ "actions": [] }));

    // A server-default rule can be enabled but not deleted.
    let (status, _) = alice
        .put(
            &format!("{base}/.m.rule.master/enabled"),
            json!({ "enabled": true }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = alice.get(&format!("{base}/.m.rule.master/enabled")).await;
    assert_eq!(body, json!({ "enabled": true }));
    let (status, body) = alice
        .delete(&format!("{base}/.m.rule.master"), json!({}))
        .await;
    assert_error(status, &body, 404, "M_NOT_FOUND");

    // Delete the custom rule.
    let (status, body) = alice
        .delete(&format!("{base}/org.example.urgent"), json!({}))
        .await;
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = alice.get(&format!("{base}/org.example.urgent")).await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    let (status, body) = alice
        .delete(&format!("{base}/org.example.urgent"), json!({}))
        .await;
    assert_error(status, &body, 404, "M_NOT_FOUND");

    // Room and content rules.
    let room = alice.create_room(json!({})).await;
    let (status, _) = alice
        .put(
            &format!("{V3}/pushrules/global/room/{}", enc(&room)),
            json!({ "actions": [] }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, got) = alice
        .get(&format!("{V3}/pushrules/global/room/{}", enc(&room)))
        .await;
    assert_eq!(
        got,
        json!({ "rule_id": room, "default": false, "enabled": true, "actions": [] })
    );
    let (status, _) = alice
        .put(
            &format!("{V3}/pushrules/global/content/org.example.word"),
            json!({ "pattern": "pedido", "actions": ["notify"] }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, got) = alice
        .get(&format!("{V3}/pushrules/global/content/org.example.word"))
        .await;
    assert_eq!(got["pattern"], "pedido");

    // Another user's rules are their own.
    let bob = s.user("bob").await;
    let (status, _) = bob.get(&format!("{base}/org.example.first")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn push_rules_cannot_be_set_as_account_data() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let (status, body) = alice
        .put(
            &format!(
                "{V3}/user/{}/account_data/m.push_rules",
                enc("@alice:localhost")
            ),
            json!({ "global": {} }),
        )
        .await;
    // The spec's answer for server-controlled account data: 405 M_BAD_JSON.
    assert_error(status, &body, 405, "M_BAD_JSON");
    let (_, rules) = alice.get(&format!("{V3}/pushrules/")).await;
    assert!(
        !rules["global"]["override"].as_array().unwrap().is_empty(),
        "the rules are intact: {rules}"
    );
}

#[tokio::test]
async fn first_sync_carries_the_default_push_rules() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let sync = alice.sync(None, 0).await;
    let rules = sync["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.push_rules")
        .expect("m.push_rules in the first sync");
    let overrides: Vec<&str> = rules["content"]["global"]["override"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule_id"].as_str().unwrap())
        .collect();
    assert_eq!(overrides.first(), Some(&".m.rule.master"));
    // The same rules the push rules API serves.
    let (status, api) = alice.get("/_matrix/client/v3/pushrules/").await;
    assert_eq!(status, 200);
    assert_eq!(api["global"], rules["content"]["global"]);
    // An incremental sync does not repeat them.
    let next = sync["next_batch"].as_str().unwrap().to_owned();
    let later = alice.sync(Some(&next), 0).await;
    assert!(
        later["account_data"]["events"]
            .as_array()
            .is_none_or(|e| e.is_empty()),
        "{later}"
    );
}
