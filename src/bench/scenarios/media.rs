//! `media`: upload and download latency of one large file.
//!
//! One user uploads `--media-uploads` files of `--media-bytes` each with
//! `POST /_matrix/media/v3/upload`, one at a time, then downloads every one
//! with `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`, timing
//! each request from its start to the last byte of the answer. Every file has
//! different bytes (a counter in its first bytes), so a content-addressed
//! server cannot skip the write of a file it already holds; each download is
//! checked byte for byte against what was uploaded.

use crate::bench::BenchArgs;
use crate::bench::client::{BoxError, http_client};
use crate::bench::report::Report;
use crate::bench::setup::{Ctx, progress};
use crate::bench::stats::{Summary, micros};
use bytes::Bytes;
use serde_json::Value;
use std::time::Instant;

pub async fn run(ctx: &Ctx, args: &BenchArgs) -> Result<Report, BoxError> {
    let n = args.media_uploads.max(1);
    let size = args.media_bytes.max(8);
    let user = ctx.register("media", 0).await?;
    let token = user.access_token().to_owned();
    let http = http_client()?;
    let base = args.homeserver.trim_end_matches('/').to_owned();
    let template = pseudo_random(size);

    progress(format!("media: uploading {n} files of {size} bytes"));
    let mut uploads_us = Vec::with_capacity(n);
    let mut uris = Vec::with_capacity(n);
    for i in 0..n {
        let mut body = template.clone();
        body[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let body = Bytes::from(body);
        let started = Instant::now();
        let res = http
            .post(format!("{base}/_matrix/media/v3/upload?filename=bench.bin"))
            .bearer_auth(&token)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await?;
        let status = res.status();
        let answer = res.bytes().await?;
        uploads_us.push(micros(started.elapsed()));
        if !status.is_success() {
            return Err(
                format!("upload {i}: {status} {}", String::from_utf8_lossy(&answer)).into(),
            );
        }
        let uri = serde_json::from_slice::<Value>(&answer)?["content_uri"]
            .as_str()
            .ok_or("upload answer without content_uri")?
            .to_owned();
        uris.push(uri);
    }

    progress(format!("media: downloading {n} files"));
    let mut downloads_us = Vec::with_capacity(n);
    let mut mismatches = 0;
    for (i, uri) in uris.iter().enumerate() {
        let path = uri.strip_prefix("mxc://").ok_or("not an mxc uri")?;
        let started = Instant::now();
        let res = http
            .get(format!("{base}/_matrix/client/v1/media/download/{path}"))
            .bearer_auth(&token)
            .send()
            .await?;
        let status = res.status();
        let got = res.bytes().await?;
        downloads_us.push(micros(started.elapsed()));
        if !status.is_success() {
            return Err(format!("download {i}: {status}").into());
        }
        let same =
            got.len() == size && got[..8] == (i as u64).to_be_bytes() && got[8..] == template[8..];
        if !same {
            mismatches += 1;
        }
    }

    let up = Summary::from_samples(&mut uploads_us);
    let down = Summary::from_samples(&mut downloads_us);
    let mb = size as f64 / 1_000_000.0;
    let mut r = Report::new("media", format!("{n} files of {size} bytes, one at a time"));
    r.row("upload", up.human());
    r.row("download", down.human());
    r.row(
        "throughput (p50)",
        format!(
            "upload {:.0} MB/s, download {:.0} MB/s",
            mb / (up.p50_us.max(1) as f64 / 1e6),
            mb / (down.p50_us.max(1) as f64 / 1e6)
        ),
    );
    r.set("files", n);
    r.set("bytes", size);
    r.set("upload", up.to_json());
    r.set("download", down.to_json());
    r.set("mismatches", mismatches);
    if mismatches > 0 {
        r.problem(format!("{mismatches} download(s) differ from their upload"));
    }
    Ok(r)
}

/// Incompressible-looking bytes (xorshift), so nothing on the path can shortcut them.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
