//! The appservice router over real HTTP on loopback: authentication, bad bodies, queries,
//! ping and unknown routes.

use std::sync::Arc;

use crate::common::server::*;
use serde_json::{Value, json};

#[tokio::test]
async fn every_endpoint_refuses_a_missing_or_wrong_hs_token() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let app = start(dir.path(), recorder.clone()).await;
    let txn = json!({ "events": [message("$a", "@alice:example.org", "hi")] });
    let endpoints = [
        (
            "PUT",
            format!("{}/_matrix/app/v1/transactions/1", app.base),
            Some(txn.clone()),
        ),
        (
            "GET",
            format!("{}/_matrix/app/v1/users/@_wa_known:example.org", app.base),
            None,
        ),
        (
            "GET",
            format!("{}/_matrix/app/v1/rooms/%23_wa_known:example.org", app.base),
            None,
        ),
        (
            "POST",
            format!("{}/_matrix/app/v1/ping", app.base),
            Some(json!({})),
        ),
        (
            "PUT",
            format!("{}/transactions/1", app.base),
            Some(txn.clone()),
        ),
    ];
    for (method, url, body) in &endpoints {
        assert_eq!(
            call(method, url, None, body.clone()).await,
            (401, unauthorized()),
            "{method} {url}"
        );
        assert_eq!(
            call(method, url, Some("WRONG"), body.clone()).await,
            (403, forbidden()),
            "{method} {url}"
        );
        // Legacy query parameter: wrong is refused too, and it must agree with the header.
        let wrong_query = format!("{url}?access_token=WRONG");
        assert_eq!(
            call(method, &wrong_query, None, body.clone()).await,
            (403, forbidden())
        );
        assert_eq!(
            call(method, &wrong_query, Some("HS_SECRET"), body.clone()).await,
            (403, forbidden())
        );
    }
    assert_eq!(
        recorder.seen(),
        Vec::<String>::new(),
        "nothing delivered without the right token"
    );
    assert_eq!(
        *recorder.pings.lock().unwrap(),
        Vec::<Option<String>>::new()
    );

    // The scheme is case-insensitive.
    let response = reqwest::Client::new()
        .post(format!("{}/_matrix/app/v1/ping", app.base))
        .header("authorization", "bearer HS_SECRET")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The legacy query parameter alone is accepted.
    let url = format!(
        "{}/_matrix/app/v1/transactions/legacy?access_token=HS_SECRET",
        app.base
    );
    assert_eq!(call("PUT", &url, None, Some(txn)).await, (200, json!({})));
    assert_eq!(
        recorder.seen(),
        ["event $a @alice:example.org m.room.message \"hi\""]
    );
    app.shut_down().await;
}

#[tokio::test]
async fn bad_bodies_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let app = start(dir.path(), recorder.clone()).await;
    let url = format!("{}/_matrix/app/v1/transactions/9", app.base);
    let client = reqwest::Client::new();
    let response = client
        .put(&url)
        .bearer_auth("HS_SECRET")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["errcode"],
        "M_NOT_JSON"
    );
    let (status, body) = call(
        "PUT",
        &url,
        Some("HS_SECRET"),
        Some(json!({ "events": {} })),
    )
    .await;
    assert_eq!((status, &body["errcode"]), (400, &json!("M_BAD_JSON")));
    let huge = format!(
        "{{\"events\":[],\"pad\":\"{}\"}}",
        "x".repeat(appservice::server::MAX_BODY_BYTES)
    );
    let response = client
        .put(&url)
        .bearer_auth("HS_SECRET")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "errcode": "M_TOO_LARGE", "error": "Request body too large" })
    );
    // Nothing was recorded as done: the same txnId with a good body is delivered.
    let good = json!({ "events": [message("$1", "@alice:example.org", "ok")] });
    assert_eq!(
        call("PUT", &url, Some("HS_SECRET"), Some(good)).await,
        (200, json!({}))
    );
    assert_eq!(
        recorder.seen(),
        ["event $1 @alice:example.org m.room.message \"ok\""]
    );
    // A body with no `events` (or null ones) is an empty transaction.
    let url = format!("{}/_matrix/app/v1/transactions/10", app.base);
    assert_eq!(
        call(
            "PUT",
            &url,
            Some("HS_SECRET"),
            Some(json!({ "events": null }))
        )
        .await,
        (200, json!({}))
    );
    assert_eq!(recorder.seen().len(), 1);
    app.shut_down().await;
}

#[tokio::test]
async fn user_and_alias_queries_call_the_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(dir.path(), Arc::new(Recorder::default())).await;
    let b = &app.base;
    let found = (200, json!({}));
    let no_user = (
        404,
        json!({ "errcode": "M_NOT_FOUND", "error": "No such user" }),
    );
    let no_alias = (
        404,
        json!({ "errcode": "M_NOT_FOUND", "error": "No such room alias" }),
    );
    let t = Some("HS_SECRET");
    assert_eq!(
        call(
            "GET",
            &format!("{b}/_matrix/app/v1/users/@_wa_known:example.org"),
            t,
            None
        )
        .await,
        found
    );
    assert_eq!(
        call(
            "GET",
            &format!("{b}/_matrix/app/v1/users/@_wa_other:example.org"),
            t,
            None
        )
        .await,
        no_user
    );
    assert_eq!(
        call("GET", &format!("{b}/users/@_wa_known:example.org"), t, None).await,
        found
    );
    let broken = call(
        "GET",
        &format!("{b}/_matrix/app/v1/users/@_wa_broken:example.org"),
        t,
        None,
    )
    .await;
    assert_eq!(
        broken,
        (
            500,
            json!({ "errcode": "M_UNKNOWN", "error": "user query failed" })
        )
    );
    let invalid = call(
        "GET",
        &format!("{b}/_matrix/app/v1/users/not-a-user"),
        t,
        None,
    )
    .await;
    assert_eq!(
        (invalid.0, &invalid.1["errcode"]),
        (400, &json!("M_INVALID_PARAM"))
    );
    assert_eq!(
        call(
            "GET",
            &format!("{b}/_matrix/app/v1/rooms/%23_wa_known:example.org"),
            t,
            None
        )
        .await,
        found
    );
    assert_eq!(
        call(
            "GET",
            &format!("{b}/_matrix/app/v1/rooms/%23_wa_nope:example.org"),
            t,
            None
        )
        .await,
        no_alias
    );
    assert_eq!(
        call(
            "GET",
            &format!("{b}/rooms/%23_wa_known:example.org"),
            t,
            None
        )
        .await,
        found
    );
    app.shut_down().await;

    // The default hooks know nobody.
    let dir = tempfile::tempdir().unwrap();
    let app = start(dir.path(), Arc::new(())).await;
    let b = &app.base;
    assert_eq!(
        call(
            "GET",
            &format!("{b}/_matrix/app/v1/users/@_wa_known:example.org"),
            t,
            None
        )
        .await,
        no_user
    );
    assert_eq!(
        call(
            "GET",
            &format!("{b}/_matrix/app/v1/rooms/%23_wa_known:example.org"),
            t,
            None
        )
        .await,
        no_alias
    );
    app.shut_down().await;
}

#[tokio::test]
async fn ping_unknown_routes_and_methods() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let app = start(dir.path(), recorder.clone()).await;
    let b = &app.base;
    let t = Some("HS_SECRET");
    let ping = format!("{b}/_matrix/app/v1/ping");
    assert_eq!(
        call("POST", &ping, t, Some(json!({ "transaction_id": "meow" }))).await,
        (200, json!({}))
    );
    assert_eq!(call("POST", &ping, t, None).await, (200, json!({})));
    assert_eq!(
        *recorder.pings.lock().unwrap(),
        [Some("meow".to_owned()), None]
    );

    let unrecognized = json!({ "errcode": "M_UNRECOGNIZED", "error": "Unrecognized request" });
    assert_eq!(
        call("GET", &format!("{b}/_matrix/app/v1/nothing"), t, None).await,
        (404, unrecognized.clone())
    );
    assert_eq!(
        call("GET", &ping, t, None).await,
        (405, unrecognized.clone())
    );
    let txn = format!("{b}/_matrix/app/v1/transactions/1");
    assert_eq!(
        call("POST", &txn, t, Some(json!({ "events": [] }))).await,
        (405, unrecognized)
    );
    app.shut_down().await;
}
