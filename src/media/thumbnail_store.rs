//! Serving thumbnails: the configured size that answers a request ([`super::sizes`]), the
//! stored thumbnail of that size, or a new one made under a decode slot and recorded.
//!
//! Decoding is the costly part (CPU, and memory up to the decoder's limits), so at most
//! `media.max_concurrent_thumbnails` run at once; requests beyond wait their turn. A request
//! that waited re-reads the store first: a burst for one new thumbnail decodes it once.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{
    Content, MediaFile, MediaService, ThumbnailSize, ThumbnailSpec, cannot_thumbnail, decode,
    encode, io_error, missing_file, sizes, thumbnail,
};
use crate::{
    error::{Error, Result},
    storage::{Batch, Key, Table},
};

/// A stored thumbnail of one media id at one size and method.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ThumbnailRecord {
    sha256: String,
    size: u64,
    content_type: String,
    width: u32,
    height: u32,
}

impl MediaService {
    /// A thumbnail of an image at the configured size that best matches the request,
    /// generated on its first request and stored for the next ones.
    pub(crate) async fn thumbnail(
        &self,
        server: &str,
        media_id: &str,
        spec: ThumbnailSpec,
        wait: Duration,
    ) -> Result<MediaFile> {
        let content = self.ready_content(server, media_id, wait).await?;
        if !thumbnail::can_thumbnail(&content.content_type) {
            return Err(cannot_thumbnail());
        }
        let size = sizes::select(
            &self.config.thumbnail_sizes,
            spec.width,
            spec.height,
            spec.method,
        )
        .ok_or_else(cannot_thumbnail)?;
        if spec.animated
            && thumbnail::may_be_animated(&content.content_type)
            && self.fits(&content, size).await?
        {
            // An animation that already fits is served as it is, every frame kept.
            return self.download(server, media_id, wait).await;
        }
        // Another server's media is cached under its server too (`record_key`).
        let record_key = self
            .record_key(server, media_id)
            .ok_or_else(cannot_thumbnail)?;
        let key = Key::new()
            .str(&record_key)
            .u64(size.width.into())
            .u64(size.height.into())
            .str(size.method.as_str())
            .into_vec();
        let record = match self.stored_thumbnail(&key)? {
            Some(record) => record,
            None => self.generate_thumbnail(&content, size, key).await?,
        };
        let file = self.open_file(&record.sha256).await?;
        Ok(MediaFile {
            file,
            size: record.size,
            content_type: record.content_type,
            filename: None,
        })
    }

    fn stored_thumbnail(&self, key: &[u8]) -> Result<Option<ThumbnailRecord>> {
        self.store
            .get(Table::MediaThumbnails, key)?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Whether the image fits in `size` as it is (read from its header, under a decode slot).
    async fn fits(&self, content: &Content, size: ThumbnailSize) -> Result<bool> {
        let original = self.files.path(&content.sha256);
        let _slot = self.decode_slot().await?;
        tokio::task::spawn_blocking(move || {
            image::ImageReader::open(&original)
                .and_then(|r| r.with_guessed_format())
                .ok()
                .and_then(|r| r.into_dimensions().ok())
                .is_some_and(|(w, h)| w <= size.width && h <= size.height)
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))
    }

    /// Makes, stores and records the thumbnail of `content` at `size`, under `key`.
    async fn generate_thumbnail(
        &self,
        content: &Content,
        size: ThumbnailSize,
        key: Vec<u8>,
    ) -> Result<ThumbnailRecord> {
        let thumb = {
            let _slot = self.decode_slot().await?;
            // Another request for the same thumbnail may have made it while this one waited.
            if let Some(record) = self.stored_thumbnail(&key)? {
                return Ok(record);
            }
            let path = self.files.path(&content.sha256);
            let bytes = tokio::fs::read(&path).await.map_err(missing_file)?;
            let ThumbnailSize {
                width,
                height,
                method,
            } = size;
            tokio::task::spawn_blocking(move || thumbnail::generate(&bytes, width, height, method))
                .await
                .map_err(|e| Error::internal(e.to_string()))?
                .map_err(|e| {
                    tracing::debug!(error = %e, "thumbnail failed");
                    cannot_thumbnail()
                })?
        };
        let stored = self
            .files
            .store_bytes(Bytes::from(thumb.bytes))
            .await
            .map_err(io_error)?;
        let record = ThumbnailRecord {
            sha256: stored.sha256,
            size: stored.size,
            content_type: thumb.content_type.to_owned(),
            width: thumb.width,
            height: thumb.height,
        };
        let mut batch = Batch::new();
        batch.put(Table::MediaThumbnails, key, encode(&record));
        self.store.write_durable(batch).await?;
        Ok(record)
    }

    /// A slot among the `max_concurrent_thumbnails` image decodes; waits for one in turn.
    async fn decode_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        self.decodes
            .acquire()
            .await
            .map_err(|e| Error::internal(e.to_string()))
    }
}
