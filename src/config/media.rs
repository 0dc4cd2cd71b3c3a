//! `[media]`: the media repository's folder, upload and preview bounds, and the thumbnail sizes
//! the server makes (their types live here, not in `media`, so that the config depends on no
//! service: `media::sizes` picks among them).

use std::path::PathBuf;

use serde::Deserialize;

/// The media repository: where files live and what uploads may be.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Folder of the media files; empty means `media` inside the storage folder.
    pub path: PathBuf,
    /// Largest accepted upload, in bytes (`m.upload.size`).
    pub max_upload_bytes: u64,
    /// Serves the deprecated unauthenticated `/_matrix/media/v3/{download,thumbnail,config}`.
    pub legacy_unauthenticated: bool,
    /// Async uploads (`/media/v1/create`) a user may have waiting for their content.
    pub max_pending_uploads: usize,
    /// Seconds an async upload may wait for its content before its id expires.
    pub pending_upload_lifetime_secs: u64,
    /// Largest width or height a configured thumbnail size may have (`thumbnail_sizes`).
    pub max_thumbnail_dimension: u32,
    /// Serves `/preview_url` (see `media::preview`); when false it answers like an unknown
    /// endpoint, as Synapse does.
    pub url_preview: bool,
    /// Addresses (CIDR) a preview may fetch from although a blocked range holds them.
    pub url_preview_ip_range_allowlist: Vec<String>,
    /// Ranges (CIDR) blocked on top of the built-in private, loopback and link-local ones.
    pub url_preview_ip_range_blocklist: Vec<String>,
    /// Largest page or image a preview downloads, in bytes.
    pub url_preview_max_bytes: u64,
    /// Previews one user may have fetched per second (sustained) and in a burst; cached ones
    /// are free. More get `429 M_LIMIT_EXCEEDED`.
    pub url_preview_per_second: f64,
    pub url_preview_burst: u32,
    /// Previews one user may have being fetched at once.
    pub max_concurrent_previews_per_user: usize,
    /// The thumbnails made of each image; a request gets the best match (`media::sizes`).
    pub thumbnail_sizes: Vec<ThumbnailSize>,
    /// Uploads one user may have in progress at once; more get `429 M_LIMIT_EXCEEDED`.
    pub max_concurrent_uploads_per_user: usize,
    /// Image decodes (thumbnail generation) running at once across the server.
    pub max_concurrent_thumbnails: usize,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::new(),
            max_upload_bytes: 50 * 1024 * 1024,
            legacy_unauthenticated: false,
            max_pending_uploads: 5,
            pending_upload_lifetime_secs: 24 * 60 * 60,
            max_thumbnail_dimension: 1600,
            url_preview: false,
            url_preview_ip_range_allowlist: Vec::new(),
            url_preview_ip_range_blocklist: Vec::new(),
            url_preview_max_bytes: 10 * 1024 * 1024,
            url_preview_per_second: 1.0,
            url_preview_burst: 10,
            max_concurrent_previews_per_user: 3,
            thumbnail_sizes: default_thumbnail_sizes(),
            max_concurrent_uploads_per_user: 4,
            max_concurrent_thumbnails: 2,
        }
    }
}

/// One thumbnail the server makes: `width`×`height` by `method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailSize {
    pub width: u32,
    pub height: u32,
    pub method: ThumbnailMethod,
}

impl ThumbnailSize {
    pub(crate) const fn new(width: u32, height: u32, method: ThumbnailMethod) -> Self {
        ThumbnailSize {
            width,
            height,
            method,
        }
    }
}

/// How the thumbnail fits the requested box (`"crop"` or `"scale"` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThumbnailMethod {
    Crop,
    Scale,
}

impl ThumbnailMethod {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ThumbnailMethod::Crop => "crop",
            ThumbnailMethod::Scale => "scale",
        }
    }
}

/// The spec's recommended sizes, which are also Synapse's defaults.
pub(crate) fn default_thumbnail_sizes() -> Vec<ThumbnailSize> {
    use ThumbnailMethod::{Crop, Scale};
    vec![
        ThumbnailSize::new(32, 32, Crop),
        ThumbnailSize::new(96, 96, Crop),
        ThumbnailSize::new(320, 240, Scale),
        ThumbnailSize::new(640, 480, Scale),
        ThumbnailSize::new(800, 600, Scale),
    ]
}
