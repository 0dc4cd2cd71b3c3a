//! Fetching a page or image for a preview without letting users reach what they must not.
//!
//! Every hop of a fetch (the URL and each redirect, followed here one by one rather than by
//! reqwest) is checked: only `http`/`https`, a literal IP must pass the [`IpFilter`], and host
//! names go through [`FilteringResolver`], which refuses a name if any of its addresses is
//! blocked (so DNS rebinding between a check and the connect cannot happen: the addresses
//! checked are the addresses used). Bodies are read chunk by chunk and abandoned past the size
//! cap. Errors are Synapse's: a blocked literal IP is `403`, a name that resolves to a blocked
//! or no address `502`, an upstream error status, a refused type or an oversized body `502`.

use std::{net::IpAddr, sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
    header,
};

use super::ip_filter::IpFilter;
use crate::error::{Error, Result};

/// Redirects followed before giving up (browsers stop around 20; pages need one or two).
const MAX_REDIRECTS: usize = 10;
/// How long to wait for the response headers of one hop.
const HEADERS_TIMEOUT: Duration = Duration::from_secs(30);
/// How long reading a body may take, like Synapse's.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Some sites serve Open Graph only to crawlers, so say what this is.
const USER_AGENT: &str = "Charla (bot; URL preview)";

/// A downloaded resource.
#[derive(Debug)]
pub struct Fetched {
    /// The URL after redirects: relative links on the page resolve against it.
    pub url: Url,
    pub content_type: String,
    /// The file name the server suggested in `Content-Disposition`.
    pub filename: Option<String>,
    pub body: Bytes,
}

/// The failure a resolver reports for a name with a blocked address or none.
#[derive(Debug, thiserror::Error)]
#[error("DNS resolution refused or failed for {0}")]
struct ResolveRefused(String);

/// Resolves host names, refusing any name one of whose addresses is blocked.
struct FilteringResolver(Arc<IpFilter>);

impl Resolve for FilteringResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let filter = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<_> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|_| ResolveRefused(host.clone()))?
                .collect();
            if addrs.is_empty() || addrs.iter().any(|a| filter.is_blocked(a.ip())) {
                tracing::info!(%host, "URL preview: host resolves to a blocked address");
                return Err(ResolveRefused(host).into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

pub struct Fetcher {
    http: reqwest::Client,
    filter: Arc<IpFilter>,
    max_bytes: u64,
}

impl Fetcher {
    pub fn new(filter: IpFilter, max_bytes: u64) -> Self {
        let filter = Arc::new(filter);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would connect on our behalf to addresses the filter never sees.
            .no_proxy()
            .dns_resolver(Arc::new(FilteringResolver(filter.clone())))
            .connect_timeout(Duration::from_secs(15))
            .user_agent(USER_AGENT)
            .build()
            .expect("reqwest client builds");
        Fetcher {
            http,
            filter,
            max_bytes,
        }
    }

    /// GETs `url`, following redirects, if its type passes `allowed` (as Synapse, a response
    /// without a `Content-Type` is fetched and typed `application/octet-stream`).
    pub async fn get(&self, url: Url, allowed: impl Fn(&str) -> bool) -> Result<Fetched> {
        let mut url = url;
        for _ in 0..=MAX_REDIRECTS {
            self.check_url(&url)?;
            let request = self
                .http
                .get(url.clone())
                .header(header::ACCEPT_LANGUAGE, "en")
                .send();
            let mut response = match tokio::time::timeout(HEADERS_TIMEOUT, request).await {
                Ok(Ok(response)) => response,
                Ok(Err(e)) => return Err(send_error(&url, e)),
                Err(_) => return Err(download_failed(&url, "timed out")),
            };
            let status = response.status();
            if status.is_redirection()
                && let Some(next) = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url.join(l).ok())
            {
                url = next;
                continue;
            }
            if status.as_u16() > 299 {
                tracing::info!(%url, %status, "URL preview: error status");
                return Err(Error::matrix(
                    StatusCode::BAD_GATEWAY,
                    "M_UNKNOWN",
                    format!("Got error {}", status.as_u16()),
                ));
            }
            let declared = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if let Some(content_type) = &declared
                && !allowed(content_type)
            {
                return Err(Error::matrix(
                    StatusCode::BAD_GATEWAY,
                    "M_UNKNOWN",
                    format!(
                        "Requested file's content type not allowed for this operation: \
                         {content_type}"
                    ),
                ));
            }
            let filename = response
                .headers()
                .get(header::CONTENT_DISPOSITION)
                .and_then(|v| v.to_str().ok())
                .and_then(filename_from_disposition);
            let body = match tokio::time::timeout(BODY_TIMEOUT, self.read_body(&mut response)).await
            {
                Ok(body) => body?,
                Err(_) => {
                    return Err(Error::matrix(
                        StatusCode::BAD_GATEWAY,
                        "M_TOO_LARGE",
                        "Requested file took too long to download",
                    ));
                }
            };
            return Ok(Fetched {
                url,
                content_type: declared.unwrap_or_else(|| "application/octet-stream".into()),
                filename,
                body,
            });
        }
        Err(download_failed(&url, "too many redirects"))
    }

    /// Only `http(s)` URLs with a host, and a literal IP only if the filter allows it.
    fn check_url(&self, url: &Url) -> Result<()> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(download_failed(
                url,
                "only http and https URLs can be previewed",
            ));
        }
        let host = url
            .host_str()
            .ok_or_else(|| download_failed(url, "the URL has no host"))?;
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>()
            && self.filter.is_blocked(ip)
        {
            tracing::info!(%ip, "URL preview: blocked literal address");
            return Err(Error::matrix(
                StatusCode::FORBIDDEN,
                "M_UNKNOWN",
                "IP address blocked",
            ));
        }
        Ok(())
    }

    /// The body, up to the size cap.
    async fn read_body(&self, response: &mut reqwest::Response) -> Result<Bytes> {
        if response
            .content_length()
            .is_some_and(|n| n > self.max_bytes)
        {
            return Err(self.too_large());
        }
        let mut body = BytesMut::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if (body.len() + chunk.len()) as u64 > self.max_bytes {
                        return Err(self.too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body.freeze()),
                Err(e) => {
                    return Err(Error::matrix(
                        StatusCode::BAD_GATEWAY,
                        "M_UNKNOWN",
                        format!("Failed to download remote body: {e}"),
                    ));
                }
            }
        }
    }

    fn too_large(&self) -> Error {
        Error::matrix(
            StatusCode::BAD_GATEWAY,
            "M_TOO_LARGE",
            format!("Requested file is too large > {} bytes", self.max_bytes),
        )
    }
}

/// A failed request: a refused or failed name lookup is Synapse's `502`, the rest its `500`.
fn send_error(url: &Url, e: reqwest::Error) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if err.is::<ResolveRefused>() {
            return Error::matrix(
                StatusCode::BAD_GATEWAY,
                "M_UNKNOWN",
                "DNS resolution failure during URL preview generation",
            );
        }
        source = err.source();
    }
    tracing::info!(%url, error = %e, "URL preview: request failed");
    download_failed(
        url,
        if e.is_timeout() {
            "timed out"
        } else {
            "request failed"
        },
    )
}

fn download_failed(url: &Url, why: &str) -> Error {
    tracing::debug!(%url, why, "URL preview download failed");
    Error::matrix(
        StatusCode::INTERNAL_SERVER_ERROR,
        "M_UNKNOWN",
        format!("Failed to download content: {why}"),
    )
}

/// The `filename*` (RFC 5987, UTF-8) or `filename` of a `Content-Disposition` header.
fn filename_from_disposition(value: &str) -> Option<String> {
    let mut plain = None;
    for param in value.split(';').map(str::trim) {
        let Some((key, val)) = param.split_once('=') else {
            continue;
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "filename*" => {
                let val = val.trim();
                let lower = val.to_ascii_lowercase();
                if let Some(encoded) = lower.strip_prefix("utf-8''").map(|_| &val[7..]) {
                    let bytes: Vec<u8> = percent_decode(encoded);
                    if let Ok(name) = String::from_utf8(bytes) {
                        return Some(name).filter(|n| !n.is_empty());
                    }
                }
            }
            "filename" => plain = Some(val.trim().trim_matches('"').to_owned()),
            _ => {}
        }
    }
    plain.filter(|n| !n.is_empty())
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_file_names() {
        assert_eq!(
            filename_from_disposition("attachment; filename=\"cat.png\"").as_deref(),
            Some("cat.png")
        );
        assert_eq!(
            filename_from_disposition("inline; filename=a.png; filename*=UTF-8''ni%C3%B1o.png")
                .as_deref(),
            Some("niño.png")
        );
        assert_eq!(filename_from_disposition("inline"), None);
    }
}
