//! Fetching a page or image for a preview without letting users reach what they must not.
//!
//! Every hop of a fetch (the URL and each redirect, followed here one by one rather than by
//! reqwest) goes through the server's [`GuardedClient`] (`crate::ssrf`), which checks it
//! against the [`IpFilter`]. Bodies are read chunk by chunk and abandoned past the size cap. Errors are Synapse's: a blocked literal IP is `403`, a name that resolves to a blocked
//! or no address `502`, an upstream error status, a refused type or an oversized body `502`.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use reqwest::{Url, header};

use crate::{
    error::{Error, Result},
    ssrf::{GuardedClient, IpFilter, Refused},
};

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
pub(crate) struct Fetched {
    /// The URL after redirects: relative links on the page resolve against it.
    pub url: Url,
    pub content_type: String,
    /// The file name the server suggested in `Content-Disposition`.
    pub filename: Option<String>,
    pub body: Bytes,
}

pub(crate) struct Fetcher {
    http: GuardedClient,
    max_bytes: u64,
}

impl Fetcher {
    pub(crate) fn new(filter: IpFilter, max_bytes: u64) -> Self {
        Fetcher {
            http: GuardedClient::new(filter, USER_AGENT, None),
            max_bytes,
        }
    }

    /// GETs `url`, following redirects, if its type passes `allowed` (as Synapse, a response
    /// without a `Content-Type` is fetched and typed `application/octet-stream`).
    pub(crate) async fn get(&self, url: Url, allowed: impl Fn(&str) -> bool) -> Result<Fetched> {
        let mut url = url;
        for _ in 0..=MAX_REDIRECTS {
            let request = self
                .http
                .request(reqwest::Method::GET, &url)
                .map_err(|refused| refused_error(&url, &refused))?
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

    /// The body, up to the size cap.
    async fn read_body(&self, response: &mut reqwest::Response) -> Result<Bytes> {
        crate::ssrf::read_capped(response, self.max_bytes)
            .await
            .map_err(|e| match e {
                crate::ssrf::BodyError::TooLarge => self.too_large(),
                crate::ssrf::BodyError::Failed(e) => Error::matrix(
                    StatusCode::BAD_GATEWAY,
                    "M_UNKNOWN",
                    format!("Failed to download remote body: {e}"),
                ),
            })
    }

    fn too_large(&self) -> Error {
        Error::matrix(
            StatusCode::BAD_GATEWAY,
            "M_TOO_LARGE",
            format!("Requested file is too large > {} bytes", self.max_bytes),
        )
    }
}

/// A URL the guard refused: a blocked literal IP is Synapse's `403`, a bad scheme or host its
/// `500`, a refused or failed name lookup its `502`.
fn refused_error(url: &Url, refused: &Refused) -> Error {
    match refused {
        Refused::BlockedAddress(_) => {
            Error::matrix(StatusCode::FORBIDDEN, "M_UNKNOWN", "IP address blocked")
        }
        Refused::Resolve(_) => Error::matrix(
            StatusCode::BAD_GATEWAY,
            "M_UNKNOWN",
            "DNS resolution failure during URL preview generation",
        ),
        Refused::Scheme => download_failed(url, "only http and https URLs can be previewed"),
        Refused::NoHost => download_failed(url, "the URL has no host"),
    }
}

/// A failed request: a refused or failed name lookup is Synapse's `502`, the rest its `500`.
fn send_error(url: &Url, e: reqwest::Error) -> Error {
    if let Some(refused) = GuardedClient::refused_by_resolver(&e) {
        return refused_error(url, &refused);
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
