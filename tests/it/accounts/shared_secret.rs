//! Synapse's shared-secret registration, as `register_new_matrix_user` uses it.

use hmac::{Hmac, Mac};
use serde_json::json;
use sha1::Sha1;

use super::{login, password_login, whoami};
use crate::common::{Client, TestServer, assert_error};

const SECRET: &str = "a-shared-secret-for-tests";

fn registration_mac(secret: &str, nonce: &str, user: &str, password: &str, admin: bool) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(nonce.as_bytes());
    mac.update(b"\x00");
    mac.update(user.as_bytes());
    mac.update(b"\x00");
    mac.update(password.as_bytes());
    mac.update(b"\x00");
    mac.update(if admin { b"admin" } else { b"notadmin" });
    hex::encode(mac.finalize().into_bytes())
}

async fn nonce(c: &Client) -> String {
    let (status, body) = c.get("/_synapse/admin/v1/register").await;
    assert_eq!(status, 200, "{body}");
    body["nonce"].as_str().expect("a nonce").to_owned()
}

#[tokio::test]
async fn shared_secret_registration_like_register_new_matrix_user() {
    let s =
        TestServer::start_with(&format!("[registration]\nshared_secret = \"{SECRET}\"\n")).await;
    let anon = s.client();
    let n = nonce(&anon).await;
    // The body the Synapse script sends, `user_type: null` included.
    let (status, body) = anon
        .post(
            "/_synapse/admin/v1/register",
            json!({ "nonce": n, "username": "admin1", "password": "pw-admin",
                    "mac": registration_mac(SECRET, &n, "admin1", "pw-admin", false),
                    "admin": false, "user_type": null }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@admin1:localhost");
    let mut c = s.client();
    c.token = Some(body["access_token"].as_str().unwrap().to_owned());
    let (_, me) = whoami(&c).await;
    assert_eq!(me["user_id"], "@admin1:localhost");
    assert_eq!(me["device_id"], body["device_id"]);
    assert_eq!(login(&s, password_login("admin1", "pw-admin")).await.0, 200);

    // An admin flag is part of the MAC.
    let n = nonce(&anon).await;
    let (status, body) = anon
        .post(
            "/_synapse/admin/v1/register",
            json!({ "nonce": n, "username": "admin2", "password": "pw",
                    "mac": registration_mac(SECRET, &n, "admin2", "pw", true), "admin": true }),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // An existing user: M_USER_IN_USE (the script's `exists_ok` looks for exactly that).
    let n = nonce(&anon).await;
    let (status, body) = anon
        .post(
            "/_synapse/admin/v1/register",
            json!({ "nonce": n, "username": "admin1", "password": "pw",
                    "mac": registration_mac(SECRET, &n, "admin1", "pw", false), "admin": false }),
        )
        .await;
    assert_error(status, &body, 400, "M_USER_IN_USE");
}

#[tokio::test]
async fn shared_secret_registration_refuses_bad_mac_and_reused_nonce() {
    let s =
        TestServer::start_with(&format!("[registration]\nshared_secret = \"{SECRET}\"\n")).await;
    let anon = s.client();

    // A MAC made with another secret.
    let n = nonce(&anon).await;
    let (status, body) = anon
        .post(
            "/_synapse/admin/v1/register",
            json!({ "nonce": n, "username": "eve", "password": "pw",
                    "mac": registration_mac("wrong-secret", &n, "eve", "pw", false) }),
        )
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    // A MAC that claims `notadmin` for an admin request.
    let n = nonce(&anon).await;
    let (status, body) = anon
        .post(
            "/_synapse/admin/v1/register",
            json!({ "nonce": n, "username": "eve", "password": "pw", "admin": true,
                    "mac": registration_mac(SECRET, &n, "eve", "pw", false) }),
        )
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    assert_eq!(login(&s, password_login("eve", "pw")).await.0, 403);

    // A nonce works once.
    let n = nonce(&anon).await;
    let good = json!({ "nonce": n, "username": "carol", "password": "pw",
                       "mac": registration_mac(SECRET, &n, "carol", "pw", false) });
    let (status, body) = anon.post("/_synapse/admin/v1/register", good.clone()).await;
    assert_eq!(status, 200, "{body}");
    let replay = json!({ "nonce": n, "username": "dave", "password": "pw",
                         "mac": registration_mac(SECRET, &n, "dave", "pw", false) });
    let (status, body) = anon.post("/_synapse/admin/v1/register", replay).await;
    assert_error(status, &body, 400, "M_UNKNOWN");
    assert_eq!(login(&s, password_login("dave", "pw")).await.0, 403);
    // A nonce the server never issued.
    let (status, body) = anon
        .post(
            "/_synapse/admin/v1/register",
            json!({ "nonce": "made-up", "username": "dave", "password": "pw",
                    "mac": registration_mac(SECRET, "made-up", "dave", "pw", false) }),
        )
        .await;
    assert_error(status, &body, 400, "M_UNKNOWN");
    assert_eq!(login(&s, password_login("dave", "pw")).await.0, 403);
}

#[tokio::test]
async fn shared_secret_registration_disabled_without_secret() {
    let s = TestServer::start_with("[registration]\nshared_secret = \"\"\n").await;
    let anon = s.client();
    let (status, body) = anon.get("/_synapse/admin/v1/register").await;
    assert_error(status, &body, 400, "M_UNKNOWN");
    // Not even a MAC keyed with the empty secret gets through.
    let (status, body) = anon
        .post(
            "/_synapse/admin/v1/register",
            json!({ "nonce": "n", "username": "eve", "password": "pw",
                    "mac": registration_mac("", "n", "eve", "pw", false) }),
        )
        .await;
    assert_error(status, &body, 400, "M_UNKNOWN");
    assert_eq!(login(&s, password_login("eve", "pw")).await.0, 403);
}
