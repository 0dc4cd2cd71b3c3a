//! The real `charla` binary as a child process: for `kill -9` tests and for starting exactly
//! as an operator would, from a config file.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// A running `charla serve`, killed and reaped when dropped (also when a test fails).
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    /// `kill -9`: nothing gets to run after this, as in a crash or power loss.
    pub fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `charla serve --config <config>` and waits until `base` answers.
pub async fn serve(config: &Path, base: &str) -> Process {
    // Wrapped at once, so every path (including a failed start) kills and reaps it. Run from
    // the config's folder, as an operator would.
    let mut process = Process(
        Command::new(env!("CARGO_BIN_EXE_charla"))
            .args(["serve", "--config"])
            .arg(config)
            .current_dir(config.parent().unwrap_or(Path::new(".")))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("charla binary starts"),
    );
    for _ in 0..600 {
        if reqwest::get(format!("{base}/_matrix/client/versions"))
            .await
            .is_ok()
        {
            return process;
        }
        if let Ok(Some(status)) = process.0.try_wait() {
            panic!("charla exited at start: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("charla did not start");
}

/// Runs `charla serve --config <config>` expecting it to refuse to start: `None` if it was
/// still running after 20 seconds (it started), else what it printed on stderr.
pub fn refused_start(config: &Path) -> Option<String> {
    let child = Command::new(env!("CARGO_BIN_EXE_charla"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("charla binary runs");
    let mut process = Process(child);
    for _ in 0..200 {
        if let Ok(Some(status)) = process.0.try_wait() {
            let mut stderr = String::new();
            if let Some(mut pipe) = process.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            assert!(!status.success(), "exited with success: {stderr}");
            return Some(stderr);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}
