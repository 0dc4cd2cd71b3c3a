//! The thumbnail sizes this server makes, and which of them answers a request.
//!
//! A thumbnail request may name any width and height. Generating and storing one thumbnail per
//! distinct request let one user turn a single upload into thousands of stored files and
//! decodes. Like Synapse's `thumbnail_sizes`, requests snap to a short configured list (the
//! spec's recommended 32×32 crop, 96×96 crop, 320×240, 640×480 and 800×600 scale by default),
//! so at most that many thumbnails ever exist per media item.
//!
//! The choice follows the spec ("an image larger than or equal to the dimensions requested
//! where possible"): among the sizes of the requested method, the smallest that covers both
//! requested dimensions; when none does, the largest. Ties go to the size listed first. (Synapse
//! ranks its stored thumbnails with a score that accepts one covered side, so it can answer a
//! 641×100 request with a 640-wide thumbnail; covering both sides never serves less than asked
//! when a larger size exists.) A thumbnail of another method is served only when the config
//! lists none of the requested one.

use crate::config::{ThumbnailMethod, ThumbnailSize};

/// The configured size that answers a request for `width`×`height` by `method`; `None` only
/// when `sizes` is empty (the config refuses that).
pub(crate) fn select(
    sizes: &[ThumbnailSize],
    width: u32,
    height: u32,
    method: ThumbnailMethod,
) -> Option<ThumbnailSize> {
    let has_method = sizes.iter().any(|s| s.method == method);
    let candidates = || {
        sizes
            .iter()
            .filter(move |s| !has_method || s.method == method)
    };
    let area = |s: &&ThumbnailSize| u64::from(s.width) * u64::from(s.height);
    candidates()
        .filter(|s| s.width >= width && s.height >= height)
        .min_by_key(area)
        .or_else(|| candidates().min_by_key(|s| std::cmp::Reverse(area(s))))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::media::default_thumbnail_sizes;

    fn pick(w: u32, h: u32, method: ThumbnailMethod) -> (u32, u32, ThumbnailMethod) {
        let s = select(&default_thumbnail_sizes(), w, h, method).unwrap();
        (s.width, s.height, s.method)
    }

    #[test]
    fn crop_requests_snap_to_the_smallest_crop_that_covers_them() {
        assert_eq!(
            pick(1, 1, ThumbnailMethod::Crop),
            (32, 32, ThumbnailMethod::Crop)
        );
        assert_eq!(
            pick(32, 32, ThumbnailMethod::Crop),
            (32, 32, ThumbnailMethod::Crop)
        );
        assert_eq!(
            pick(33, 20, ThumbnailMethod::Crop),
            (96, 96, ThumbnailMethod::Crop)
        );
        assert_eq!(
            pick(20, 33, ThumbnailMethod::Crop),
            (96, 96, ThumbnailMethod::Crop)
        );
        assert_eq!(
            pick(96, 96, ThumbnailMethod::Crop),
            (96, 96, ThumbnailMethod::Crop)
        );
        // Larger than every crop size: the largest.
        assert_eq!(
            pick(100, 100, ThumbnailMethod::Crop),
            (96, 96, ThumbnailMethod::Crop)
        );
        assert_eq!(
            pick(1600, 1600, ThumbnailMethod::Crop),
            (96, 96, ThumbnailMethod::Crop)
        );
    }

    #[test]
    fn scale_requests_snap_to_the_smallest_scale_that_covers_them() {
        assert_eq!(
            pick(1, 1, ThumbnailMethod::Scale),
            (320, 240, ThumbnailMethod::Scale)
        );
        assert_eq!(
            pick(320, 240, ThumbnailMethod::Scale),
            (320, 240, ThumbnailMethod::Scale)
        );
        assert_eq!(
            pick(400, 300, ThumbnailMethod::Scale),
            (640, 480, ThumbnailMethod::Scale)
        );
        assert_eq!(
            pick(641, 100, ThumbnailMethod::Scale),
            (800, 600, ThumbnailMethod::Scale)
        );
        assert_eq!(
            pick(100, 481, ThumbnailMethod::Scale),
            (800, 600, ThumbnailMethod::Scale)
        );
        assert_eq!(
            pick(800, 600, ThumbnailMethod::Scale),
            (800, 600, ThumbnailMethod::Scale)
        );
        assert_eq!(
            pick(1600, 1200, ThumbnailMethod::Scale),
            (800, 600, ThumbnailMethod::Scale)
        );
    }

    #[test]
    fn a_method_the_config_lacks_is_answered_by_the_other() {
        let only_scale = [ThumbnailSize::new(320, 240, ThumbnailMethod::Scale)];
        let s = select(&only_scale, 32, 32, ThumbnailMethod::Crop).unwrap();
        assert_eq!(s, only_scale[0]);
        assert_eq!(select(&[], 32, 32, ThumbnailMethod::Crop), None);
    }

    #[test]
    fn every_request_gets_one_of_the_configured_sizes() {
        let sizes = default_thumbnail_sizes();
        for w in (1..2000).step_by(37) {
            for h in (1..2000).step_by(41) {
                for method in [ThumbnailMethod::Crop, ThumbnailMethod::Scale] {
                    let s = select(&sizes, w, h, method).unwrap();
                    assert!(sizes.contains(&s));
                    assert_eq!(s.method, method);
                }
            }
        }
        let huge = select(&sizes, u32::MAX, u32::MAX, ThumbnailMethod::Crop).unwrap();
        assert_eq!(huge.method, ThumbnailMethod::Crop);
    }
}
