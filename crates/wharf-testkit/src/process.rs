//! A broker child process. Dropping it kills the process.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A free loopback port: bound then released, so the broker can bind it.
///
/// Ports come from below the kernel's ephemeral range (`ip_local_port_range`), never from
/// it. An ephemeral port can be taken, while a node is down, by any outgoing connection
/// (another test's client, a peer reconnecting), and a restarted node must bind the same
/// cluster port its peers know: CI saw "Address already in use" on such a restart. Each
/// call takes the next port of a process-wide sequence (starting at a place derived from
/// the process id), so one test process never hands out a port twice before the sequence
/// wraps.
pub fn free_port() -> anyhow::Result<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    if let Some((low, high)) = free_port_range() {
        let span = u32::from(high - low);
        // The first caller places the sequence; two first callers racing only start at the
        // same place, and the bind check below still separates them.
        let _ = NEXT.compare_exchange(
            u32::MAX,
            std::process::id().wrapping_mul(7919) % span,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        for _ in 0..span {
            let slot = NEXT.fetch_add(1, Ordering::Relaxed) % span;
            let port = low + u16::try_from(slot).expect("slot < span");
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    // No room outside the ephemeral range: the kernel's choice.
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The ports [`free_port`] draws from, `low..high`: below the ephemeral range from 10000,
/// or above it when it starts lower; `None` when neither leaves 2,000 ports.
fn free_port_range() -> Option<(u16, u16)> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok();
    let mut bounds = range
        .as_deref()
        .unwrap_or("32768 60999")
        .split_whitespace()
        .filter_map(|v| v.parse::<u16>().ok());
    let (first, last) = (bounds.next()?, bounds.next()?);
    if first >= 12000 {
        Some((10000, first))
    } else if last <= 63535 {
        Some((last + 1, u16::MAX))
    } else {
        None
    }
}

pub struct BrokerProcess {
    bin: PathBuf,
    data_dir: PathBuf,
    port: u16,
    /// The admin HTTP port, unless the settings turned the admin listener off.
    admin_port: Option<u16>,
    /// The AMQP port, unless the settings chose `amqp_listen` themselves.
    amqp_port: Option<u16>,
    args: Vec<String>,
    child: Option<Child>,
    starts: usize,
    /// The log files' name before `.broker-<start>.log` (the data directory's name).
    log_stem: String,
}

impl BrokerProcess {
    /// Starts `bin serve` on a free port with `data_dir`, plus `--set` settings. The admin
    /// HTTP listener gets a free port too (see [`Self::admin_addr`]) unless `settings` set
    /// `admin_listen`, so brokers of parallel tests never share the default 9644.
    pub fn start(
        bin: impl Into<PathBuf>,
        data_dir: &Path,
        settings: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let stem = data_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("wharf")
            .to_string();
        Self::start_logged(bin, data_dir, settings, &stem)
    }

    /// [`Self::start`] with log files named `<log_stem>.broker-<start>.log` beside the data
    /// directory: a second process on the same data directory keeps the first one's logs.
    pub fn start_logged(
        bin: impl Into<PathBuf>,
        data_dir: &Path,
        settings: &[(&str, &str)],
        log_stem: &str,
    ) -> anyhow::Result<Self> {
        let bin = bin.into();
        // A port from `free_port` is released before the broker binds it, so another
        // process (a client's outgoing connection, another test) can take it meanwhile:
        // a start that fails with "Address already in use" is retried on new ports.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut args: Vec<String> = settings
                .iter()
                .flat_map(|(k, v)| ["--set".to_string(), format!("{k}={v}")])
                .collect();
            let admin_port = if settings.iter().any(|(k, _)| *k == "admin_listen") {
                None
            } else {
                let port = free_port()?;
                args.extend([
                    "--set".to_string(),
                    format!("admin_listen=127.0.0.1:{port}"),
                ]);
                Some(port)
            };
            // The AMQP listener defaults to 5672: parallel brokers get free ports instead.
            let amqp_port = if settings.iter().any(|(k, _)| *k == "amqp_listen") {
                None
            } else {
                let port = free_port()?;
                args.extend(["--set".to_string(), format!("amqp_listen=127.0.0.1:{port}")]);
                Some(port)
            };
            let mut p = Self {
                bin: bin.clone(),
                data_dir: data_dir.to_path_buf(),
                port: free_port()?,
                admin_port,
                amqp_port,
                args,
                child: None,
                starts: 0,
                log_stem: log_stem.to_string(),
            };
            match p.launch() {
                Ok(()) => return Ok(p),
                Err(e) if attempt < 5 && e.to_string().contains("Address already in use") => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The admin HTTP listener (`/metrics`, `/health`, `/ready`, `/v1/...`), when the test
    /// did not choose `admin_listen` itself.
    pub fn admin_addr(&self) -> Option<String> {
        self.admin_port.map(|p| format!("127.0.0.1:{p}"))
    }

    /// The AMQP listener, when the test did not choose `amqp_listen` itself.
    pub fn amqp_addr(&self) -> Option<String> {
        self.amqp_port.map(|p| format!("127.0.0.1:{p}"))
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Where the broker's stderr goes: one file per start, beside the data directory.
    pub fn log_path(&self, start: usize) -> PathBuf {
        self.data_dir
            .with_file_name(format!("{}.broker-{start}.log", self.log_stem))
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let log = File::create(self.log_path(self.starts))?;
        let child = Command::new(&self.bin)
            .arg("serve")
            .arg("--listen")
            .arg(self.addr())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .env_clear()
            // The broker reads WHARF_* settings from its environment; a test's own variables
            // (WHARF_CRASH_KILLS, ...) must not reach it.
            .envs(std::env::vars().filter(|(k, _)| !k.starts_with("WHARF_")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if TcpStream::connect(self.addr()).is_ok() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    bail!(
                        "broker exited during start ({status}); log: {}",
                        std::fs::read_to_string(self.log_path(self.starts)).unwrap_or_default()
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "broker did not accept connections on {} within 60 s",
            self.addr()
        )
    }

    /// SIGKILL: no flush, no clean shutdown.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// SIGTERM, then wait for a clean exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> anyhow::Result<bool> {
        let Some(mut c) = self.child.take() else {
            return Ok(true);
        };
        Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = c.try_wait()? {
                return Ok(status.success());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        c.kill()?;
        c.wait()?;
        Ok(false)
    }

    /// Starts again on the same port and data directory. The ports cannot change (a
    /// cluster's peers know them), so a start that finds one taken is retried for up to 10 s
    /// in case whoever holds it lets go.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            self.kill9()?;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.launch() {
                Err(e) if attempt < 50 && e.to_string().contains("Address already in use") => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                result => return result,
            }
        }
    }

    /// The process id of the running broker.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The broker's log of its latest start.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path(self.starts)).unwrap_or_default()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_outside_the_ephemeral_range() {
        let (low, high) = free_port_range().expect("this machine's ephemeral range leaves room");
        let ports: Vec<u16> = (0..200).map(|_| free_port().unwrap()).collect();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "no port handed out twice");
        assert!(
            ports.iter().all(|p| (low..high).contains(p)),
            "every port in {low}..{high}, outside the ephemeral range: {ports:?}"
        );
    }
}
