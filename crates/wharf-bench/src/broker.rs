//! A broker started by the tool (`--spawn`): `wharf serve` on a free loopback port with a
//! temporary data directory, killed with SIGKILL and restarted by the `recovery` scenario.
//! The child never outlives this value.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub struct SpawnedBroker {
    bin: PathBuf,
    addr: SocketAddr,
    /// The admin listener, scraped for the broker's stage breakdown.
    admin: SocketAddr,
    /// Holds `data/` (the broker's data directory) and `broker.log`; removed on drop.
    root: tempfile::TempDir,
    settings: Vec<String>,
    child: Option<Child>,
}

impl SpawnedBroker {
    /// Starts the broker and waits until its port accepts. The temporary directory is made
    /// inside `parent` when given, else in the system's temporary directory.
    pub fn start(
        bin: &Path,
        parent: Option<&Path>,
        settings: &[String],
    ) -> anyhow::Result<SpawnedBroker> {
        if !bin.is_file() {
            bail!("broker binary {} not found (build it with `cargo build --release -p wharf-server` or pass --wharf-bin)", bin.display());
        }
        let ignored = ignored_settings(std::env::vars_os().map(|(key, _)| key));
        if !ignored.is_empty() {
            eprintln!(
                "warning: the spawned broker does not see {} (WHARF_* variables are not passed on); give settings as --broker-set KEY=VALUE",
                ignored.join(", ")
            );
        }
        let builder = {
            let mut b = tempfile::Builder::new();
            b.prefix("wharf-bench-");
            b
        };
        let root = match parent {
            Some(dir) => builder.tempdir_in(dir),
            None => builder.tempdir(),
        }
        .context("creating the broker's temporary directory")?;
        std::fs::create_dir(root.path().join("data"))
            .context("creating the broker's data directory")?;
        let mut broker = SpawnedBroker {
            bin: bin.to_path_buf(),
            addr: free_loopback_port()?,
            admin: free_loopback_port()?,
            root,
            settings: settings.to_vec(),
            child: None,
        };
        // A port from `free_loopback_port` is released before the broker binds it, so
        // another process can take it meanwhile: such a start is retried on a new port.
        let mut attempt = 0;
        loop {
            attempt += 1;
            broker.launch()?;
            match broker.wait_accepting(Duration::from_secs(30)) {
                Ok(_) => return Ok(broker),
                Err(e)
                    if attempt < 5
                        && std::fs::read_to_string(broker.log_path())
                            .is_ok_and(|log| log.contains("Address already in use")) =>
                {
                    let _ = broker.kill_hard();
                    let _ = std::fs::remove_file(broker.log_path());
                    eprintln!(
                        "broker port {} was taken ({e}); retrying on another",
                        broker.addr
                    );
                    broker.addr = free_loopback_port()?;
                    broker.admin = free_loopback_port()?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The running process's id (it changes when the broker is restarted).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.path().join("broker.log")
    }

    /// Starts the process (again) on the same port and data directory, without waiting.
    pub fn launch(&mut self) -> anyhow::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening broker.log")?;
        let mut command = Command::new(&self.bin);
        // The broker reads WHARF_* settings from its environment: the bench's own
        // environment (a test runner's variables, say) must not configure it.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WHARF_") {
                command.env_remove(key);
            }
        }
        command
            .arg("serve")
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(self.data_dir())
            // The admin port (9644 by default) may be taken: a free one, for /metrics.
            .arg("--set")
            .arg(format!("admin_listen={}", self.admin))
            // Likewise the AMQP port (5672 by default).
            .arg("--set")
            .arg("amqp_listen=off");
        for setting in &self.settings {
            command.arg("--set").arg(setting);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .context("duplicating the broker.log handle")?,
            )
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill_hard(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("sending SIGKILL to the broker")?;
            child.wait().context("reaping the broker")?;
        }
        Ok(())
    }

    /// Polls until a TCP connection to the broker's port succeeds; fails early if it exited.
    pub fn wait_accepting(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            if let Some(exit) = self.exit_note() {
                bail!("{exit}");
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!(
                    "broker port {} did not accept within {timeout:?}; {}",
                    self.addr,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// When the broker has exited: how, and the end of its log.
    pub fn exit_note(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(format!("broker exited ({status}); {}", self.log_tail()))
    }

    /// The last lines of broker.log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        // A failed start ends with a backtrace: its `Error:` line says why.
        let error = lines.iter().rev().find(|l| l.starts_with("Error:"));
        let mut tail = lines[lines.len().saturating_sub(5)..].join(" / ");
        if let Some(error) = error {
            tail = format!("{error} … {tail}");
        }
        format!(
            "broker.log tail: {}",
            if tail.is_empty() { "(empty)" } else { &tail }
        )
    }
}

impl Drop for SpawnedBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `WHARF_*` variables that name broker settings (the tool's own, such as the test
/// runner's `WHARF_PYTHON`, left out): a spawned broker does not inherit them.
fn ignored_settings(keys: impl Iterator<Item = std::ffi::OsString>) -> Vec<String> {
    const TOOL: [&str; 4] = [
        "WHARF_PYTHON",
        "WHARF_NODE_PATH",
        "WHARF_BOOTSTRAP",
        "WHARF_ADMIN",
    ];
    let mut names: Vec<String> = keys
        .map(|k| k.to_string_lossy().into_owned())
        .filter(|k| k.starts_with("WHARF_") && !TOOL.contains(&k.as_str()))
        .collect();
    names.sort();
    names
}

fn free_loopback_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_variables_that_name_settings_are_reported() {
        let keys = [
            "PATH",
            "WHARF_PYTHON",
            "WHARF_SHARDS",
            "WHARF_LOG_SEGMENT_PREALLOCATE_BYTES",
        ]
        .map(std::ffi::OsString::from);
        assert_eq!(
            ignored_settings(keys.into_iter()),
            vec!["WHARF_LOG_SEGMENT_PREALLOCATE_BYTES", "WHARF_SHARDS"]
        );
    }
}
