//! The media repository: uploads, async uploads, downloads and thumbnails.
//!
//! Bytes live in a content-addressed [`FileStore`]; what the store knows about each media id
//! (uploader, hash, type, name, size, or "created, content pending") is a JSON record in the
//! `media` table. A file is durable before its record is written, and the record is durable
//! before the client hears of success, so an acknowledged `mxc://` URI always resolves.
//!
//! Async uploads (`/media/v1/create`) leave a pending record and an entry in `media_pending`
//! (per uploader, so the number a user may hold is bounded, like Synapse). Downloads of a pending
//! id wait for its content up to the client's `timeout_ms`, woken by every completed upload.
//!
//! What one caller can cost is bounded: uploads in progress per user ([`limits`]), thumbnails
//! per media item (requests snap to the configured [`sizes`]), and image decodes at once across
//! the server (a semaphore, so decoding cannot take every blocking thread or gigabytes of
//! memory). Files are read and written with async I/O, so a slow client holds no thread.

pub(crate) mod disposition;
pub(crate) mod files;
pub(crate) mod preview;
mod remote;
pub(crate) mod sizes;
pub(crate) mod thumbnail;
mod thumbnail_store;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::StatusCode;
use parking_lot::Mutex;
use rand::{Rng, distributions::Alphanumeric};
use ruma::{OwnedServerName, ServerName, UserId};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};

pub(crate) use crate::config::ThumbnailMethod;
pub(crate) use crate::config::ThumbnailSize;
pub(crate) use files::FileStore;
use files::Stored;

use crate::{
    config::MediaConfig,
    error::{Error, Result},
    ratelimit::{UserSlot, UserSlots},
    storage::{Batch, Key, Store, Table, keys},
    users::Identity,
};

/// The longest a download waits for pending content, whatever the client asks.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(60);
/// How long a download waits for pending content when the client does not say.
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(20);

/// What the store knows about one media id.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MediaRecord {
    uploader: String,
    created_ms: u64,
    /// `None` while an async upload waits for its bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content: Option<Content>,
    /// When a pending id stops accepting its upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unused_expires_at: Option<u64>,
}

/// Uploaded content: the file it is in and how to present it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Content {
    sha256: String,
    size: u64,
    content_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    filename: Option<String>,
}

/// What the client said about an upload besides its bytes.
#[derive(Debug, Default, Clone)]
pub(crate) struct UploadInfo {
    pub content_type: Option<String>,
    pub filename: Option<String>,
    /// The declared `Content-Length`, to refuse an oversized upload before reading it.
    pub content_length: Option<u64>,
}

/// Media ready to be sent: an open file and how to present it.
#[derive(Debug)]
pub(crate) struct MediaFile {
    /// Stream it with [`files::read_stream`].
    pub file: tokio::fs::File,
    pub size: u64,
    pub content_type: String,
    pub filename: Option<String>,
}

/// A thumbnail request, already validated. Its size is what the client asked for; the
/// thumbnail served is of the configured size that best matches it ([`sizes::select`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ThumbnailSpec {
    pub width: u32,
    pub height: u32,
    pub method: ThumbnailMethod,
    pub animated: bool,
}

pub struct MediaService {
    store: Store,
    files: FileStore,
    server_name: OwnedServerName,
    config: MediaConfig,
    /// Bumped after every completed upload; pending downloads wait on it.
    uploaded: watch::Sender<u64>,
    /// Serializes the pending-count check with the creation it allows.
    create_lock: Mutex<()>,
    /// Serializes "still pending?" with the write that fills a pending id: content goes in once.
    commit_lock: Mutex<()>,
    /// Uploads in progress per user.
    uploads: UserSlots,
    /// Image decodes (thumbnails) running at once.
    decodes: Semaphore,
}

impl MediaService {
    pub(crate) fn open(
        store: Store,
        files: FileStore,
        server_name: OwnedServerName,
        config: MediaConfig,
    ) -> Self {
        MediaService {
            store,
            files,
            server_name,
            uploaded: watch::Sender::new(0),
            create_lock: Mutex::new(()),
            commit_lock: Mutex::new(()),
            uploads: UserSlots::new(config.max_concurrent_uploads_per_user, "uploads"),
            decodes: Semaphore::new(config.max_concurrent_thumbnails),
            config,
        }
    }

    pub(crate) fn max_upload_bytes(&self) -> u64 {
        self.config.max_upload_bytes
    }

    pub(crate) fn legacy_enabled(&self) -> bool {
        self.config.legacy_unauthenticated
    }

    /// `POST /upload`: stores the bytes and returns the new `mxc://` URI.
    pub(crate) async fn upload<S, E>(
        &self,
        who: &Identity,
        info: UploadInfo,
        body: S,
    ) -> Result<String>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::error::Error + 'static,
    {
        let _slot = self.upload_slot(who)?;
        let stored = self.receive(body, info.content_length).await?;
        let id = new_media_id();
        let record = MediaRecord {
            uploader: who.user_id.to_string(),
            created_ms: now_ms(),
            content: Some(content(stored, info)),
            unused_expires_at: None,
        };
        let mut batch = Batch::new();
        batch.put(Table::Media, id.as_bytes(), encode(&record));
        self.store.write_durable(batch).await?;
        self.uploaded.send_modify(|n| *n += 1);
        Ok(self.mxc(&id))
    }

    /// Stores bytes the server fetched itself (a URL preview's image) as media of `owner`,
    /// who asked for it, like Synapse records the requesting user. Returns the `mxc://` URI.
    pub(crate) async fn store_fetched(
        &self,
        owner: &UserId,
        bytes: Bytes,
        content_type: &str,
        filename: Option<String>,
    ) -> Result<String> {
        let stored = self.files.store_bytes(bytes).await.map_err(io_error)?;
        let info = UploadInfo {
            content_type: Some(content_type.to_owned()),
            filename,
            content_length: None,
        };
        let id = new_media_id();
        let record = MediaRecord {
            uploader: owner.to_string(),
            created_ms: now_ms(),
            content: Some(content(stored, info)),
            unused_expires_at: None,
        };
        let mut batch = Batch::new();
        batch.put(Table::Media, id.as_bytes(), encode(&record));
        self.store.write_durable(batch).await?;
        self.uploaded.send_modify(|n| *n += 1);
        Ok(self.mxc(&id))
    }

    /// `POST /media/v1/create`: reserves an id for a later upload by `uploader`.
    ///
    /// Returns the URI and when the reservation expires (ms since the epoch).
    pub(crate) async fn create(&self, uploader: &UserId) -> Result<(String, u64)> {
        let now = now_ms();
        let id = new_media_id();
        let expires = now + self.config.pending_upload_lifetime_secs * 1000;
        let ticket = {
            let _guard = self.create_lock.lock();
            let prefix = Key::new().str(uploader.as_str()).into_vec();
            let mut batch = Batch::new();
            let mut waiting = Vec::new();
            for entry in self.store.scan_prefix(Table::MediaPending, &prefix) {
                let (key, value) = entry?;
                let until = keys::decode_u64(&value);
                if until > now {
                    waiting.push(until);
                } else {
                    // Expired: forget the id, so a late upload to it is refused.
                    let expired_id = keys::str_parts(&key[prefix.len()..]).next();
                    batch.delete(Table::MediaPending, key.to_vec());
                    if let Some(expired_id) = expired_id {
                        batch.delete(Table::Media, expired_id.as_bytes());
                    }
                }
            }
            if waiting.len() >= self.config.max_pending_uploads {
                let first = waiting.iter().min().copied().unwrap_or(now);
                return Err(Error::limit_exceeded(first.saturating_sub(now).max(1)));
            }
            let record = MediaRecord {
                uploader: uploader.to_string(),
                created_ms: now,
                content: None,
                unused_expires_at: Some(expires),
            };
            batch.put(Table::Media, id.as_bytes(), encode(&record));
            batch.put(
                Table::MediaPending,
                Key::new().str(uploader.as_str()).str(&id),
                expires.to_be_bytes(),
            );
            self.store.write(batch)?
        };
        self.store.durable(ticket).await?;
        Ok((self.mxc(&id), expires))
    }

    /// `PUT /upload/{serverName}/{mediaId}`: the content of an id reserved by `create`.
    pub(crate) async fn upload_pending<S, E>(
        &self,
        who: &Identity,
        server: &str,
        media_id: &str,
        info: UploadInfo,
        body: S,
    ) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::error::Error + 'static,
    {
        let uploader = &who.user_id;
        let record = self.local_record(server, media_id)?;
        check_can_fill(&record, uploader)?;
        let _slot = self.upload_slot(who)?;
        let stored = self.receive(body, info.content_length).await?;
        let ticket = {
            let _guard = self.commit_lock.lock();
            // Another upload to the same id may have finished while these bytes arrived.
            let mut record = self.local_record(server, media_id)?;
            check_can_fill(&record, uploader)?;
            record.content = Some(content(stored, info));
            record.unused_expires_at = None;
            let mut batch = Batch::new();
            batch.put(Table::Media, media_id.as_bytes(), encode(&record));
            batch.delete(
                Table::MediaPending,
                Key::new().str(uploader.as_str()).str(media_id),
            );
            self.store.write(batch)?
        };
        self.store.durable(ticket).await?;
        self.uploaded.send_modify(|n| *n += 1);
        Ok(())
    }

    /// The content of a media id, waiting up to `wait` if its upload is still pending.
    pub(crate) async fn download(
        &self,
        server: &str,
        media_id: &str,
        wait: Duration,
    ) -> Result<MediaFile> {
        let content = self.ready_content(server, media_id, wait).await?;
        let file = self.open_file(&content.sha256).await?;
        Ok(MediaFile {
            file,
            size: content.size,
            content_type: content.content_type,
            filename: content.filename,
        })
    }

    /// Takes an upload slot for `who`; appservices registered with `rate_limited: false`
    /// (bridges carrying many customers' files) are exempt, as they are from rate limits.
    fn upload_slot(&self, who: &Identity) -> Result<Option<UserSlot<'_>>> {
        let limited = who
            .appservice
            .as_ref()
            .is_none_or(|a| a.registration.is_rate_limited());
        limited
            .then(|| self.uploads.acquire(&who.user_id))
            .transpose()
    }

    /// Streams `body` into the file store within the upload limit.
    async fn receive<S, E>(&self, mut body: S, declared: Option<u64>) -> Result<Stored>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::error::Error + 'static,
    {
        let max = self.config.max_upload_bytes;
        if declared.is_some_and(|n| n > max) {
            return Err(too_large(max));
        }
        let mut writer = self.files.writer().await.map_err(io_error)?;
        let mut total = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    writer.abort().await;
                    return Err(interrupted(&e));
                }
            };
            total += chunk.len() as u64;
            if total > max {
                writer.abort().await;
                return Err(too_large(max));
            }
            if let Err(e) = writer.push(&chunk).await {
                writer.abort().await;
                return Err(io_error(e));
            }
        }
        writer.finish().await.map_err(io_error)
    }

    /// The uploaded content of a local media id, waiting for a pending one.
    async fn ready_content(&self, server: &str, media_id: &str, wait: Duration) -> Result<Content> {
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        let mut uploads = self.uploaded.subscribe();
        loop {
            let record = self.local_record(server, media_id)?;
            if let Some(content) = record.content {
                return Ok(content);
            }
            if record.unused_expires_at.is_some_and(|t| t <= now_ms()) {
                return Err(unknown_media());
            }
            match tokio::time::timeout_at(deadline, uploads.changed()).await {
                Ok(Ok(())) => continue,
                _ => {
                    return Err(Error::matrix(
                        StatusCode::GATEWAY_TIMEOUT,
                        "M_NOT_YET_UPLOADED",
                        "The content has not been uploaded yet",
                    ));
                }
            }
        }
    }

    /// The record of a media id of this server, or of another server's media cached here
    /// (`remote.rs`); `M_NOT_FOUND` for anything else.
    fn local_record(&self, server: &str, media_id: &str) -> Result<MediaRecord> {
        let key = self
            .record_key(server, media_id)
            .ok_or_else(unknown_media)?;
        match self.store.get(Table::Media, key.as_bytes())? {
            Some(v) => decode(&v),
            None => Err(unknown_media()),
        }
    }

    /// Where a media id's record is: the id for this server's media, `server/id` for another
    /// server's cached here (a `/` is never in a media id). `None` for an invalid one.
    fn record_key(&self, server: &str, media_id: &str) -> Option<String> {
        let server = ServerName::parse(server).ok()?;
        if !valid_media_id(media_id) {
            return None;
        }
        Some(match server == self.server_name {
            true => media_id.to_owned(),
            false => format!("{server}/{media_id}"),
        })
    }

    async fn open_file(&self, sha256: &str) -> Result<tokio::fs::File> {
        self.files.open_file(sha256).await.map_err(missing_file)
    }

    fn mxc(&self, id: &str) -> String {
        format!("mxc://{}/{id}", self.server_name)
    }
}

/// Synapse's order: unknown id, someone else's id, already filled, expired.
fn check_can_fill(record: &MediaRecord, uploader: &UserId) -> Result<()> {
    if record.uploader != uploader.as_str() {
        return Err(Error::forbidden("You may not upload to this media ID"));
    }
    if record.content.is_some() {
        return Err(Error::matrix(
            StatusCode::CONFLICT,
            "M_CANNOT_OVERWRITE_MEDIA",
            "Media ID already has content",
        ));
    }
    if record.unused_expires_at.is_some_and(|t| t <= now_ms()) {
        return Err(Error::not_found("Media ID has expired"));
    }
    Ok(())
}

fn content(stored: Stored, info: UploadInfo) -> Content {
    Content {
        sha256: stored.sha256,
        size: stored.size,
        content_type: info
            .content_type
            .filter(|t| !t.trim().is_empty())
            .unwrap_or_else(|| "application/octet-stream".into()),
        filename: info.filename.filter(|f| !f.is_empty()),
    }
}

/// Media ids are what this server generates, and what the spec allows: `[A-Za-z0-9_-]+`.
fn valid_media_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn new_media_id() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("media records serialize")
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::internal(format!("corrupt media record: {e}")))
}

fn unknown_media() -> Error {
    Error::not_found("Media not found")
}

fn cannot_thumbnail() -> Error {
    Error::unknown("Cannot generate a thumbnail for this media")
}

/// The request body ended early: `408` when it stalled past the idle timeout (see
/// `server::idle`), `400` when the client broke it off.
fn interrupted(e: &(dyn std::error::Error + 'static)) -> Error {
    if crate::error::body_stalled(e) {
        crate::error::stalled_error()
    } else {
        Error::unknown(format!("Upload interrupted: {e}"))
    }
}

fn too_large(max: u64) -> Error {
    Error::too_large(format!("Upload exceeds the limit of {max} bytes"))
}

fn io_error(e: std::io::Error) -> Error {
    tracing::error!(error = %e, "media file write failed");
    Error::internal("Cannot store the media")
}

fn missing_file(e: std::io::Error) -> Error {
    tracing::error!(error = %e, "media file unreadable");
    Error::internal("Media file unavailable")
}
