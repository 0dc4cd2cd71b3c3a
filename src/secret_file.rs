//! Secrets the server generates into its data folder on first start (the shared-secret
//! registration secret, `admin.token`): whoever can read the data folder is the server's
//! administrator, so these files are as private as the store.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

/// Reads the secret at `path`, or creates it: 32 random alphanumerics (~190 bits), written to a
/// temporary file with mode 0600, synced and renamed into place so a crash leaves either no
/// secret or a whole one. `what` names it in errors and the log line (never the value).
pub(crate) fn read_or_create(path: &Path, what: &str) -> Result<String> {
    let io =
        |e: std::io::Error| Error::internal(format!("{what}: cannot use {}: {e}", path.display()));
    match std::fs::read_to_string(path) {
        Ok(secret) if !secret.trim().is_empty() => return Ok(secret.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let secret = random_string(32);
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(format!("{secret}\n").as_bytes())
        .map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    tracing::info!(path = %path.display(), "generated {what}");
    Ok(secret)
}

/// `len` random alphanumerics from the OS-seeded thread RNG: tokens, secrets, ids.
pub(crate) fn random_string(len: usize) -> String {
    use rand::{Rng, distributions::Alphanumeric};
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}
