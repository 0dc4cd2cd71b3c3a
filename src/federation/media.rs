//! Media across servers (spec v1.16, "Content Repository" over federation):
//! `GET /_matrix/federation/v1/media/download/{mediaId}` and `…/thumbnail/{mediaId}` answer
//! `multipart/mixed`: a JSON metadata part (`{}`), then the content with its type and
//! disposition. This server serves its own media that way, and fetches another server's the
//! same way when a local user asks for it, caching it (`media/remote.rs`).

use bytes::Bytes;
use ruma::ServerName;

use super::{Federation, join::encode, join::peer_error};
use crate::{
    error::{Error, Result},
    media::MediaService,
};

impl Federation {
    /// Fetches another server's media into the cache, unless it is there already.
    pub(crate) async fn fetch_media(
        &self,
        media: &MediaService,
        server: &ServerName,
        media_id: &str,
    ) -> Result<()> {
        if server == self.server_name || media.is_cached(server, media_id)? {
            return Ok(());
        }
        let path = format!("/_matrix/federation/v1/media/download/{}", encode(media_id));
        // The multipart framing and metadata come on top of the content.
        let limit = media.max_upload_bytes() + 64 * 1024;
        let (headers, body) =
            self.client
                .get_bytes(server, &path, limit)
                .await
                .map_err(|e| match e {
                    super::client::PeerError::Status(_, 404, _) => {
                        Error::not_found("Unknown media")
                    }
                    e => peer_error(e),
                })?;
        let content_type = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let part = content_part(content_type, &body)
            .ok_or_else(|| bad_gateway("The media server's answer is not multipart/mixed media"))?;
        let filename = part
            .disposition
            .as_deref()
            .and_then(crate::media::disposition::filename_of);
        media
            .cache_remote(server, media_id, part.body, part.content_type, filename)
            .await
    }
}

fn bad_gateway(message: &'static str) -> Error {
    Error::matrix(axum::http::StatusCode::BAD_GATEWAY, "M_UNKNOWN", message)
}

/// The content part of a `multipart/mixed` media answer.
#[derive(Debug, PartialEq)]
pub(crate) struct ContentPart {
    pub(crate) content_type: Option<String>,
    pub(crate) disposition: Option<String>,
    pub(crate) body: Bytes,
}

/// The second part of a `multipart/mixed` body (the first is the JSON metadata); `None` when
/// the body is not that, or the second part only redirects (`Location`, not followed).
pub(crate) fn content_part(content_type: &str, body: &Bytes) -> Option<ContentPart> {
    let (mime, params) = content_type.split_once(';')?;
    if !mime.trim().eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    let boundary = params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
    })?;
    let delimiter = format!("--{boundary}");
    let bytes = &body[..];
    let mut starts = Vec::new();
    let mut at = 0;
    while let Some(found) = find(&bytes[at..], delimiter.as_bytes()) {
        starts.push(at + found);
        at += found + delimiter.len();
    }
    // The delimiters before part one, part two, and after part two.
    let (second, end) = (*starts.get(1)?, *starts.get(2)?);
    let part = &bytes[second + delimiter.len()..end];
    let part = part.strip_prefix(b"\r\n")?;
    let part = part.strip_suffix(b"\r\n").unwrap_or(part);
    let split = find(part, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&part[..split]).ok()?;
    let mut content_type = None;
    let mut disposition = None;
    for line in head.split("\r\n") {
        let (name, value) = line.split_once(':')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-type" => content_type = Some(value.trim().to_owned()),
            "content-disposition" => disposition = Some(value.trim().to_owned()),
            "location" => return None,
            _ => {}
        }
    }
    let offset = second + delimiter.len() + 2 + split + 4;
    let len = part.len() - split - 4;
    Some(ContentPart {
        content_type,
        disposition,
        body: body.slice(offset..offset + len),
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The framing of a `multipart/mixed` media answer around `content`: what comes before it and
/// what comes after.
pub(crate) fn framing(boundary: &str, content_type: &str, disposition: &str) -> (String, String) {
    let before = format!(
        "--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\n\
         Content-Type: {content_type}\r\nContent-Disposition: {disposition}\r\n\r\n"
    );
    let after = format!("\r\n--{boundary}--\r\n");
    (before, after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_part_is_read_back_from_what_is_served() {
        let content = Bytes::from_static(b"\x89PNG\r\n--not-the-boundary\r\n\r\nbytes");
        let (before, after) = framing("b0und", "image/png", "inline; filename=\"a.png\"");
        let mut body = before.into_bytes();
        body.extend_from_slice(&content);
        body.extend_from_slice(after.as_bytes());
        let body = Bytes::from(body);
        let part = content_part("multipart/mixed; boundary=b0und", &body).unwrap();
        assert_eq!(part.body, content);
        assert_eq!(part.content_type.as_deref(), Some("image/png"));
        assert_eq!(
            part.disposition.as_deref(),
            Some("inline; filename=\"a.png\"")
        );
        // Synapse quotes the boundary.
        assert_eq!(
            content_part("multipart/mixed; boundary=\"b0und\"", &body)
                .unwrap()
                .body,
            content
        );
    }

    #[test]
    fn other_answers_are_not_media() {
        let body = Bytes::from_static(b"{}");
        assert!(content_part("application/json", &body).is_none());
        assert!(content_part("multipart/mixed; boundary=x", &body).is_none());
        let redirect = Bytes::from_static(
            b"--x\r\nContent-Type: application/json\r\n\r\n{}\r\n--x\r\nLocation: https://cdn/a\r\n\r\n\r\n--x--\r\n",
        );
        assert!(content_part("multipart/mixed; boundary=x", &redirect).is_none());
    }
}
