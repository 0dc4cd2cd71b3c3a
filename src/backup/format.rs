//! The archive's layout: what each part is called and what its two JSON documents hold. Shared
//! by the writer ([`super::write`]) and the reader ([`super::read`]); the module documentation
//! of [`super`] describes the format for operators.

use serde::{Deserialize, Serialize};

/// `format` of both JSON documents.
pub(crate) const FORMAT: &str = "charla-backup";
/// Bumped when a reader of the previous version could misread an archive.
pub(crate) const VERSION: u32 = 1;

/// The first entry.
pub(crate) const HEADER: &str = "BACKUP.json";
/// The last entry but one: every other entry's size and SHA-256, and the digest of the stream.
pub(crate) const MANIFEST: &str = "MANIFEST.json";
/// The last entry: the manifest's SHA-256, in `sha256sum`'s format.
pub(crate) const MANIFEST_SUM: &str = "MANIFEST.json.sha256";

/// Where a store of the archive is restored: the data folder itself (the homeserver's store),
/// or a folder under an in-process bridge's state folder (`bridges/<bridge>/<folder>`).
pub(crate) const DATA: &str = "data";
pub(crate) const BRIDGES_PREFIX: &str = "bridges/";

/// `BACKUP.json`: what the archive is, read before anything else.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Header {
    pub format: String,
    pub version: u32,
    pub created_ts: u64,
    /// A store only makes sense under the server name it was written with.
    pub server_name: String,
    pub charla_version: String,
    /// In the order their parts come.
    pub stores: Vec<StoreEntry>,
}

/// One store of the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoreEntry {
    /// Its parts are `stores/<key>/image/<n>` and `stores/<key>/log/<segment>`.
    pub key: String,
    /// [`DATA`], or [`BRIDGES_PREFIX`], the bridge and the folder under its state folder.
    pub location: String,
}

/// `MANIFEST.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub format: String,
    pub version: u32,
    /// Every entry before the manifest except media files, in order. Media files are named by
    /// the SHA-256 of their bytes, which is their checksum.
    pub entries: Vec<EntrySum>,
    pub media: MediaSummary,
    /// The bytes of the archive before the manifest's header, and their SHA-256: with the
    /// manifest's own checksum, this covers every byte of the archive, tar headers and padding
    /// included.
    pub preceding_bytes: u64,
    pub preceding_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EntrySum {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MediaSummary {
    pub files: u64,
    pub bytes: u64,
    /// Files whose bytes did not match their name on the server already (damaged on its disk):
    /// archived as they were, and reported again at restore.
    pub mismatched: Vec<String>,
}

/// What an entry of the archive is, from its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    Header,
    Image {
        store: String,
    },
    Log {
        store: String,
        segment: String,
    },
    /// `aa/bb/<sha256>` under the media folder.
    Media {
        rel: String,
        sha256: String,
    },
    Manifest,
    ManifestSum,
}

impl Part {
    /// The entry's path in the archive.
    pub(crate) fn image_path(store: &str, n: u64) -> String {
        format!("stores/{store}/image/{n:08}")
    }

    pub(crate) fn log_path(store: &str, segment: &str) -> String {
        format!("stores/{store}/log/{segment}")
    }

    pub(crate) fn media_path(sha256: &str) -> String {
        format!("media/{}/{}/{sha256}", &sha256[..2], &sha256[2..4])
    }

    /// Recognizes an entry's path; `None` for anything the format does not have, including
    /// paths that would leave their folder.
    pub(crate) fn parse(path: &str) -> Option<Part> {
        match path {
            HEADER => return Some(Part::Header),
            MANIFEST => return Some(Part::Manifest),
            MANIFEST_SUM => return Some(Part::ManifestSum),
            _ => {}
        }
        let segments: Vec<&str> = path.split('/').collect();
        match segments.as_slice() {
            ["stores", store, "image", n] if is_key(store) && is_digits(n) => Some(Part::Image {
                store: (*store).to_owned(),
            }),
            ["stores", store, "log", segment] if is_key(store) && is_segment(segment) => {
                Some(Part::Log {
                    store: (*store).to_owned(),
                    segment: (*segment).to_owned(),
                })
            }
            ["media", aa, bb, sha256]
                if is_sha256(sha256) && sha256[..2] == **aa && sha256[2..4] == **bb =>
            {
                Some(Part::Media {
                    rel: format!("{aa}/{bb}/{sha256}"),
                    sha256: (*sha256).to_owned(),
                })
            }
            _ => None,
        }
    }
}

/// A store's key: lowercase letters, digits and `-`.
pub(crate) fn is_key(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_segment(s: &str) -> bool {
    s.strip_suffix(".log").is_some_and(is_digits)
}

/// A lowercase hex SHA-256: what media files are named.
pub(crate) fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_recognized_and_nothing_else() {
        let sha = "ab".repeat(32);
        assert_eq!(Part::parse("BACKUP.json"), Some(Part::Header));
        assert_eq!(
            Part::parse(&Part::image_path("charla", 3)),
            Some(Part::Image {
                store: "charla".into()
            })
        );
        assert_eq!(
            Part::parse(&Part::log_path("whatsapp", "00000000000000000002.log")),
            Some(Part::Log {
                store: "whatsapp".into(),
                segment: "00000000000000000002.log".into()
            })
        );
        assert!(matches!(
            Part::parse(&Part::media_path(&sha)),
            Some(Part::Media { .. })
        ));
        for bad in [
            "stores/../image/1",
            "stores/charla/log/../../x.log",
            "stores/Charla/image/1",
            "media/ab/ab/../../../etc/passwd",
            &format!("media/aa/ab/{sha}"),
            "/BACKUP.json",
            "admin.token",
            "",
        ] {
            assert_eq!(Part::parse(bad), None, "{bad}");
        }
    }
}
