//! URL previews (`/preview_url`): the Open Graph data of a page, its image kept as media.
//!
//! Synapse's behaviour is the reference, since the spec leaves the content to servers: HTML is
//! read for Open Graph (with fallbacks, see [`open_graph`]); an image URL previews as the image;
//! the page's `og:image` is downloaded and stored in the media repository, so clients get an
//! `mxc://` URI (with `og:image:type`, `matrix:image:size` and its real dimensions) and never
//! contact the site themselves. Fetches are guarded against SSRF ([`fetch`], `crate::ssrf`).
//!
//! Previews are cached in memory per URL for an hour, failures for a minute, and concurrent
//! requests for one URL share a single fetch: a link posted in a busy room is fetched once,
//! not once per client. `ts` is ignored, as Synapse's in-memory cache ignores it.

mod charset;
mod fetch;
mod html;
mod open_graph;

use std::{
    collections::BTreeMap,
    io::Cursor,
    sync::Arc,
    time::{Duration, Instant},
};

use http::StatusCode;
use parking_lot::Mutex;
use reqwest::Url;
use ruma::UserId;
use serde_json::{Map, Value};
use tokio::sync::OnceCell;

use self::fetch::{Fetched, Fetcher};
use super::MediaService;
use crate::{
    config::MediaConfig,
    error::{Error, Result},
    expiring::ExpiringMap,
    ratelimit::{RateLimiter, UserSlots},
};

/// How long a preview is served from memory.
const PREVIEW_TTL: Duration = Duration::from_secs(60 * 60);
/// How long a failure is: long enough to spare a failing site a herd of clients, short
/// enough that a passing outage does not hide a link's preview for long.
const FAILURE_TTL: Duration = Duration::from_secs(60);
/// URLs kept in memory at most; past it the oldest goes first.
const MAX_CACHED: usize = 10_000;
/// Synapse prunes keys and values longer than these from the result.
const MAX_KEY_CHARS: usize = 50;
const MAX_VALUE_CHARS: usize = 1000;

/// A preview or the error it failed with, shareable between the requests that waited for it.
type Outcome = std::result::Result<Arc<Value>, CachedError>;

#[derive(Clone)]
struct CachedError {
    status: StatusCode,
    errcode: &'static str,
    message: String,
}

impl From<&Error> for CachedError {
    fn from(e: &Error) -> Self {
        CachedError {
            status: e.status(),
            errcode: e.errcode(),
            message: e.body()["error"].as_str().unwrap_or_default().to_owned(),
        }
    }
}

impl From<CachedError> for Error {
    fn from(e: CachedError) -> Self {
        Error::matrix(e.status, e.errcode, e.message)
    }
}

struct CacheEntry {
    created: Instant,
    outcome: Arc<OnceCell<Outcome>>,
}

impl CacheEntry {
    fn fresh(&self, now: Instant) -> bool {
        let ttl = match self.outcome.get() {
            Some(Err(_)) => FAILURE_TTL,
            _ => PREVIEW_TTL,
        };
        now.duration_since(self.created) < ttl
    }
}

pub struct UrlPreviewer {
    enabled: bool,
    fetcher: Fetcher,
    cache: Mutex<ExpiringMap<CacheEntry>>,
    /// Fetches per user per second: a preview makes the server download up to
    /// `url_preview_max_bytes` from a site the user chose.
    rate: RateLimiter,
    /// Fetches per user at once: a slow site holds one for up to a minute.
    fetching: UserSlots,
}

impl UrlPreviewer {
    pub(crate) fn new(config: &MediaConfig) -> std::result::Result<Self, String> {
        let filter = crate::ssrf::IpFilter::new(
            &config.url_preview_ip_range_blocklist,
            &config.url_preview_ip_range_allowlist,
        )?;
        Ok(UrlPreviewer {
            enabled: config.url_preview,
            fetcher: Fetcher::new(filter, config.url_preview_max_bytes),
            cache: Mutex::new(ExpiringMap::new(MAX_CACHED, PREVIEW_TTL)),
            rate: RateLimiter::new(config.url_preview_per_second, config.url_preview_burst),
            fetching: UserSlots::new(config.max_concurrent_previews_per_user, "URL previews"),
        })
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// The Open Graph data of `url` for `user`, from the cache or fetched now.
    pub(crate) async fn preview(
        &self,
        media: &MediaService,
        user: &UserId,
        url: &str,
    ) -> Result<Value> {
        let parsed = Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| Error::invalid_param("url must be an absolute http or https URL"))?;
        let cell = self.cache_cell(url);
        // What a user may make the server fetch is limited; a cached preview, or one another
        // request is fetching, costs nothing and is not.
        let _slot = match cell.initialized() {
            true => None,
            false => {
                self.rate.check(user.as_str())?;
                Some(self.fetching.acquire(user)?)
            }
        };
        let outcome = cell
            .get_or_init(|| async {
                self.generate(media, user, parsed)
                    .await
                    .map(Arc::new)
                    .map_err(|e| CachedError::from(&e))
            })
            .await;
        match outcome {
            Ok(og) => Ok(Value::clone(og)),
            Err(e) => Err(e.clone().into()),
        }
    }

    /// The shared slot of `url`: the cached outcome, one being computed, or a new empty one.
    /// The cache holds at most [`MAX_CACHED`] URLs, the oldest dropped first, with no scan.
    fn cache_cell(&self, url: &str) -> Arc<OnceCell<Outcome>> {
        let now = Instant::now();
        let mut cache = self.cache.lock();
        if let Some(entry) = cache.get_mut(url).filter(|e| e.fresh(now)) {
            return entry.outcome.clone();
        }
        let outcome = Arc::new(OnceCell::new());
        cache.insert(
            url.to_owned(),
            CacheEntry {
                created: now,
                outcome: outcome.clone(),
            },
        );
        outcome
    }

    async fn generate(&self, media: &MediaService, user: &UserId, url: Url) -> Result<Value> {
        let page = self.fetcher.get(url, is_previewable).await?;
        let mut og = BTreeMap::new();
        if is_image(&page.content_type) {
            og.insert(
                "og:description".to_owned(),
                page.filename.clone().map_or(Value::Null, Value::String),
            );
            self.add_image(media, user, page, &mut og).await?;
        } else if is_html(&page.content_type) && !page.body.trim_ascii().is_empty() {
            // Up to `url_preview_max_bytes` of HTML: scanned off the async workers.
            let (body, content_type) = (page.body.clone(), page.content_type.clone());
            og = tokio::task::spawn_blocking(move || {
                let text = charset::decode(&body, Some(&content_type));
                open_graph::from_document(&html::parse(&text))
            })
            .await
            .map_err(|e| Error::internal(e.to_string()))?;
            self.precache_image(media, user, &page.url, &mut og).await;
        }
        let og: Map<String, Value> = og
            .into_iter()
            .filter(|(key, value)| {
                let len = match value {
                    Value::String(s) => s.chars().count(),
                    other => other.to_string().chars().count(),
                };
                key.chars().count() <= MAX_KEY_CHARS && len <= MAX_VALUE_CHARS
            })
            .collect();
        Ok(Value::Object(og))
    }

    /// Replaces the page's `og:image` URL by the image stored as media, or drops it when the
    /// image cannot be had; the preview itself never fails because of its image.
    async fn precache_image(
        &self,
        media: &MediaService,
        user: &UserId,
        page_url: &Url,
        og: &mut BTreeMap<String, Value>,
    ) {
        let Some(Value::String(image)) = og.remove("og:image") else {
            return;
        };
        let Ok(image_url) = page_url.join(image.trim()) else {
            return;
        };
        let fetched = match self.fetcher.get(image_url.clone(), is_previewable).await {
            Ok(fetched) if is_image(&fetched.content_type) => fetched,
            Ok(_) => return,
            Err(e) => {
                tracing::info!(url = %image_url, error = %e, "URL preview: image not fetched");
                return;
            }
        };
        if let Err(e) = self.add_image(media, user, fetched, og).await {
            tracing::warn!(error = %e, "URL preview: image not stored");
        }
    }

    /// Stores an image as media and describes it as Synapse does.
    async fn add_image(
        &self,
        media: &MediaService,
        user: &UserId,
        image: Fetched,
        og: &mut BTreeMap<String, Value>,
    ) -> Result<()> {
        let size = image.body.len() as u64;
        let bytes = image.body.clone();
        let dimensions = tokio::task::spawn_blocking(move || {
            image::ImageReader::new(Cursor::new(&bytes[..]))
                .with_guessed_format()
                .ok()
                .and_then(|r| r.into_dimensions().ok())
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))?;
        let mxc = media
            .store_fetched(user, image.body, &image.content_type, image.filename)
            .await?;
        og.insert("og:image".into(), mxc.into());
        og.insert("og:image:type".into(), image.content_type.into());
        og.insert("matrix:image:size".into(), size.into());
        if let Some((width, height)) = dimensions {
            og.insert("og:image:width".into(), width.into());
            og.insert("og:image:height".into(), height.into());
        }
        Ok(())
    }
}

fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn is_image(content_type: &str) -> bool {
    media_type(content_type).starts_with("image/")
}

fn is_html(content_type: &str) -> bool {
    let t = media_type(content_type);
    t.starts_with("text/html") || t.starts_with("application/xhtml")
}

/// What Synapse downloads for a preview: images, HTML and JSON (oEmbed).
fn is_previewable(content_type: &str) -> bool {
    is_image(content_type)
        || is_html(content_type)
        || media_type(content_type).starts_with("application/json")
}
