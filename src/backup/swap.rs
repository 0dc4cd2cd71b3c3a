//! Putting a restored folder in place of another in one step, and making it durable first.

use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
};

/// Makes everything written under `folder` durable: one `syncfs` of its filesystem instead of
/// an `fsync` per file (a restore writes every media file).
pub(super) fn sync_tree(folder: &Path) -> io::Result<()> {
    let dir = File::open(folder)?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid descriptor, open for the duration of the call.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        // SAFETY: no arguments.
        unsafe { libc::sync() };
    }
    dir.sync_all()
}

/// Gives the new folder `tree` the mode of the folder it replaces (`like`; 0700 when there is
/// none: a data folder holds secrets), and, when run as root, the owner of it for every file:
/// a restore run as root for a server running as its own user leaves that user's folder.
pub(super) fn adopt_owner(tree: &Path, like: &Path) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let old = std::fs::metadata(like).ok();
    let mode = old.as_ref().map_or(0o700, |m| m.mode() & 0o7777);
    std::fs::set_permissions(tree, std::fs::Permissions::from_mode(mode))?;
    let Some(old) = old else { return Ok(()) };
    let mine = std::fs::metadata(tree)?;
    if (mine.uid(), mine.gid()) == (old.uid(), old.gid()) {
        return Ok(());
    }
    // SAFETY: no arguments; reads the process's effective user.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let mut stack = vec![tree.to_owned()];
    while let Some(path) = stack.pop() {
        std::os::unix::fs::lchown(&path, Some(old.uid()), Some(old.gid()))?;
        if std::fs::symlink_metadata(&path)?.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}

/// Puts the folder `new` where `dest` is. When `dest` exists, the two are exchanged atomically
/// (`renameat2(RENAME_EXCHANGE)`), so at every instant `dest` is either the old folder or the
/// new one, whole; the old one, now at `new`, is then deleted. Where the exchange is not
/// available, `dest` is first renamed aside (for a moment `dest` does not exist; the old folder
/// is `<dest>.replaced-…` until it is deleted). Returns where the old folder went, if it was
/// not deleted.
pub(super) fn put_in_place(new: &Path, dest: &Path) -> io::Result<Option<PathBuf>> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    if !dest.exists() {
        std::fs::rename(new, dest)?;
        File::open(parent)?.sync_all()?;
        return Ok(None);
    }
    let old = match exchange(new, dest) {
        Ok(()) => new.to_owned(),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            return Err(io::Error::other(format!(
                "{} is on another filesystem than its parent folder (a mount point?): restore \
                 into an empty folder instead",
                dest.display()
            )));
        }
        Err(_) => {
            let aside = sibling(dest, "replaced");
            std::fs::rename(dest, &aside)?;
            std::fs::rename(new, dest)?;
            aside
        }
    };
    File::open(parent)?.sync_all()?;
    match std::fs::remove_dir_all(&old) {
        Ok(()) => Ok(None),
        Err(e) => {
            tracing::warn!(folder = %old.display(), error = %e, "cannot delete the replaced folder");
            Ok(Some(old))
        }
    }
}

/// A new, unused name beside `path`: `.<name>.<what>-<random>`.
pub(super) fn sibling(path: &Path, what: &str) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "data".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.{what}-{:08x}", rand::random::<u32>()))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::{ffi::CString, os::unix::ffi::OsStrExt};
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::other("a NUL in a path"))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: two valid C strings that outlive the call.
    let done = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn exchange(_: &Path, _: &Path) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_replaced_whole_and_the_old_one_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("data");
        std::fs::create_dir(&dest).unwrap();
        std::fs::write(dest.join("old"), "old").unwrap();
        let new = sibling(&dest, "restoring");
        std::fs::create_dir(&new).unwrap();
        std::fs::write(new.join("new"), "new").unwrap();
        assert_eq!(put_in_place(&new, &dest).unwrap(), None);
        assert_eq!(std::fs::read_to_string(dest.join("new")).unwrap(), "new");
        assert!(!dest.join("old").exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // Into a folder that does not exist yet.
        let fresh = dir.path().join("fresh");
        let new = sibling(&fresh, "restoring");
        std::fs::create_dir(&new).unwrap();
        put_in_place(&new, &fresh).unwrap();
        assert!(fresh.is_dir());
    }
}
