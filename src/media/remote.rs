//! Other servers' media, fetched over federation (`federation/media.rs`) when a local user
//! asks for it, and cached here under `server/id` (`record_key`): a second download, and
//! thumbnails, are served from the cache like local media.

use bytes::Bytes;
use ruma::ServerName;

use super::{Content, MediaRecord, MediaService, UploadInfo, content, encode, io_error, now_ms};
use crate::{
    error::{Error, Result},
    storage::{Batch, Table},
};

impl MediaService {
    /// Whether another server's media is cached here.
    pub(crate) fn is_cached(&self, server: &ServerName, media_id: &str) -> Result<bool> {
        let Some(key) = self.record_key(server.as_str(), media_id) else {
            return Ok(false);
        };
        Ok(self.store.contains(Table::Media, key.as_bytes())?)
    }

    /// Caches another server's media, fetched for a local user; at most the upload limit.
    pub(crate) async fn cache_remote(
        &self,
        server: &ServerName,
        media_id: &str,
        bytes: Bytes,
        content_type: Option<String>,
        filename: Option<String>,
    ) -> Result<()> {
        let key = self
            .record_key(server.as_str(), media_id)
            .ok_or_else(|| Error::not_found("Unknown media"))?;
        if bytes.len() as u64 > self.config.max_upload_bytes {
            return Err(Error::too_large(
                "The remote media is larger than this server takes",
            ));
        }
        let stored = self.files.store_bytes(bytes).await.map_err(io_error)?;
        let info = UploadInfo {
            content_type,
            filename,
            content_length: None,
        };
        let record = MediaRecord {
            uploader: server.to_string(),
            created_ms: now_ms(),
            content: Some::<Content>(content(stored, info)),
            unused_expires_at: None,
        };
        let mut batch = Batch::new();
        batch.put(Table::Media, key.into_bytes(), encode(&record));
        self.store.write_durable(batch).await?;
        Ok(())
    }
}
