//! `charla admin backup PATH` and `charla admin restore PATH`.

use std::path::{Path, PathBuf};

use clap::Args;

use super::client::{AdminClient, Failure};

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The archive to write (exactly this path).
    pub path: PathBuf,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The archive to restore.
    pub path: PathBuf,
    /// Restore into a data folder that is not empty (its content is replaced).
    #[arg(long)]
    pub force: bool,
}

pub(super) async fn backup(client: &AdminClient, args: BackupArgs) -> Result<(), Failure> {
    let _ = (client, args);
    Err(Failure::local("backup is being built"))
}

pub(super) async fn restore(config: &Path, args: RestoreArgs) -> Result<(), Failure> {
    let _ = (config, args);
    Err(Failure::local("restore is being built"))
}
