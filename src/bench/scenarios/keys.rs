//! `keys`: `/keys/query` and `/keys/claim` over many devices.
//!
//! One user logs in `DEVICES` times (one device per login), and every device uploads its
//! identity keys, one one-time key per measured claim, and a fallback key. Another user then
//! alternates, one request at a time, a `/keys/query` for all of the user's devices and a
//! `/keys/claim` of one `signed_curve25519` key from each of them. Every answer is checked to
//! hold all the devices, so a fast wrong answer cannot pass for a fast right one.

use std::time::Instant;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::bench::BenchArgs;
use crate::bench::client::{BoxError, retry_429};
use crate::bench::report::Report;
use crate::bench::setup::{Ctx, SETUP_CONCURRENCY, bounded, progress};
use crate::bench::stats::{Summary, micros};

/// How many devices the queried user has.
const DEVICES: usize = 100;
/// The most claims measured: each one uses up a one-time key of every device.
const MAX_CLAIMS: usize = 500;

const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Deserialize)]
struct LoggedIn {
    device_id: String,
    access_token: String,
}

pub async fn run(ctx: &Ctx, args: &BenchArgs) -> Result<Report, BoxError> {
    let samples = args.samples.clamp(1, MAX_CLAIMS);
    progress("keys: registering the device owner and the querier");
    let owner = ctx.register("keys-owner", 0).await?;
    let querier = ctx.register("keys-querier", 1).await?;
    let hs = ctx.homeserver(0);

    progress(format!(
        "keys: logging in {DEVICES} devices and uploading keys"
    ));
    let login_url = hs.url(&["login"]);
    let upload_url = hs.url(&["keys", "upload"]);
    let devices = bounded(DEVICES, SETUP_CONCURRENCY, |i| {
        let (login_url, upload_url, owner) = (login_url.clone(), upload_url.clone(), &owner);
        async move {
            let body = json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": owner.user_id },
                "password": ctx.password(),
                "initial_device_display_name": format!("bench device {i}"),
            });
            let (device, _): (LoggedIn, _) =
                retry_429(|| hs.call(Method::POST, login_url.clone(), None, Some(&body), TIMEOUT))
                    .await?;
            let upload = key_upload(&owner.user_id, &device.device_id, samples);
            retry_429(|| {
                hs.call::<Value>(
                    Method::POST,
                    upload_url.clone(),
                    Some(&device.access_token),
                    Some(&upload),
                    TIMEOUT,
                )
            })
            .await?;
            Ok(device.device_id)
        }
    })
    .await?;

    let query_body = json!({ "device_keys": { &owner.user_id: [] } });
    let wanted: Map<String, Value> = devices
        .iter()
        .map(|d| (d.clone(), json!("signed_curve25519")))
        .collect();
    let claim_body = json!({ "one_time_keys": { &owner.user_id: wanted } });
    let query_url = hs.url(&["keys", "query"]);
    let claim_url = hs.url(&["keys", "claim"]);

    progress(format!("keys: measuring {samples} queries and claims"));
    let (mut query_us, mut claim_us) = (Vec::new(), Vec::new());
    let mut problems = Vec::new();
    for _ in 0..samples {
        let started = Instant::now();
        let answer = querier
            .post_json(query_url.clone(), &query_body, TIMEOUT)
            .await;
        query_us.push(micros(started.elapsed()));
        match answer {
            Ok(v) if count(&v["device_keys"][&owner.user_id]) == DEVICES => {}
            Ok(v) => problems.push(format!(
                "query answered {} devices",
                count(&v["device_keys"][&owner.user_id])
            )),
            Err(e) => problems.push(format!("query failed: {e}")),
        }
        let started = Instant::now();
        let answer = querier
            .post_json(claim_url.clone(), &claim_body, TIMEOUT)
            .await;
        claim_us.push(micros(started.elapsed()));
        match answer {
            Ok(v) if count(&v["one_time_keys"][&owner.user_id]) == DEVICES => {}
            Ok(v) => problems.push(format!(
                "claim answered {} devices",
                count(&v["one_time_keys"][&owner.user_id])
            )),
            Err(e) => problems.push(format!("claim failed: {e}")),
        }
    }

    let query = Summary::from_samples(&mut query_us);
    let claim = Summary::from_samples(&mut claim_us);
    let mut r = Report::new("keys", format!("{DEVICES} devices, {samples} rounds"));
    r.row("/keys/query", query.human());
    r.row("/keys/claim", claim.human());
    r.set("devices", DEVICES);
    r.set("query_latency", query.to_json());
    r.set("claim_latency", claim.to_json());
    if let Some(first) = problems.first() {
        r.problem(format!("{} wrong answers, first: {first}", problems.len()));
    }
    Ok(r)
}

fn count(v: &Value) -> usize {
    v.as_object().map_or(0, Map::len)
}

/// A device's upload: identity keys, `claims` one-time keys and a fallback key. The server
/// does not check device signatures, so the keys are well formed but not real.
fn key_upload(user: &str, device: &str, claims: usize) -> Value {
    let key = |n: String| json!({ "key": n, "signatures": { user: { format!("ed25519:{device}"): "c2ln" } } });
    let one_time: Map<String, Value> = (0..claims)
        .map(|i| (format!("signed_curve25519:{i:06}"), key(format!("otk{i}"))))
        .collect();
    json!({
        "device_keys": {
            "user_id": user, "device_id": device,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": { format!("curve25519:{device}"): "Y3VydmU", format!("ed25519:{device}"): "ZWQyNTUxOQ" },
            "signatures": { user: { format!("ed25519:{device}"): "c2ln" } },
        },
        "one_time_keys": one_time,
        "fallback_keys": { "signed_curve25519:fallback": key("fallback".into()) },
    })
}
