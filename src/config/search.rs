//! `[search]`: the full-text index (`src/search/`).

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// Without it `/search` answers with no results and nothing is indexed.
    pub enabled: bool,
    /// The index's folder; empty: `search` inside `[storage] path`. It can always be rebuilt
    /// from the store (`charla admin reindex`), so backups leave it out.
    pub path: PathBuf,
    /// Memory the indexer buffers documents in before it writes a segment, in MiB (tantivy's
    /// writer budget, at least 15).
    pub writer_memory_mb: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            enabled: true,
            path: PathBuf::new(),
            writer_memory_mb: 64,
        }
    }
}

impl SearchConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(15..=4096).contains(&self.writer_memory_mb) {
            return Err("search.writer_memory_mb must be between 15 and 4096".into());
        }
        Ok(())
    }
}
