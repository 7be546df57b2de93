//! The machine's own ceilings, measured in the same run and in the data directory's
//! filesystem: every scenario figure is divided by one of these. Each measurement stops by
//! itself at a byte count or a time limit, whichever comes first; the two bandwidths are the
//! better of two tries.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::stats::mb_per_sec;

const MIB: usize = 1024 * 1024;
const TRIES: usize = 2;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ceilings {
    /// Sequential buffered write, 1 MiB chunks, then one fsync (MB/s).
    pub disk_write_mb_s: f64,
    /// Appending 1 MiB chunks, each followed by fdatasync (MB/s).
    pub disk_sync_mb_s: f64,
    /// fdatasync latency after a 4 KiB append.
    pub fdatasync_p50_ms: f64,
    pub fdatasync_p99_ms: f64,
    /// TCP over 127.0.0.1 between two threads (MB/s).
    pub loopback_mb_s: f64,
}

impl Ceilings {
    /// Not measured (`--skip-ceilings`): every value NaN, so no figure gets a ratio.
    pub fn unmeasured() -> Ceilings {
        Ceilings {
            disk_write_mb_s: f64::NAN,
            disk_sync_mb_s: f64::NAN,
            fdatasync_p50_ms: f64::NAN,
            fdatasync_p99_ms: f64::NAN,
            loopback_mb_s: f64::NAN,
        }
    }
}

/// Measures all ceilings; files go in `dir` and are removed afterwards.
pub fn measure(dir: &Path) -> anyhow::Result<Ceilings> {
    // A ceiling is the best the machine does: the better of two tries, as neighbours come and go.
    let (mut disk_write_mb_s, mut disk_sync_mb_s) = (0.0_f64, 0.0_f64);
    for _ in 0..TRIES {
        let write = disk_write(dir, 1024 * MIB as u64, Duration::from_secs(10))
            .context("disk_write ceiling")?;
        let sync = disk_sync(dir, 256 * MIB as u64, Duration::from_secs(5))
            .context("disk_sync ceiling")?;
        disk_write_mb_s = disk_write_mb_s.max(write);
        disk_sync_mb_s = disk_sync_mb_s.max(sync);
    }
    let latency = fdatasync_latency(dir, 2000, Duration::from_secs(5))
        .context("fdatasync latency ceiling")?;
    let loopback_mb_s =
        loopback(16 * 1024 * MIB as u64, Duration::from_secs(3)).context("loopback ceiling")?;
    Ok(Ceilings {
        disk_write_mb_s,
        disk_sync_mb_s,
        fdatasync_p50_ms: latency.value_at_quantile(0.5) as f64 / 1000.0,
        fdatasync_p99_ms: latency.value_at_quantile(0.99) as f64 / 1000.0,
        loopback_mb_s,
    })
}

fn chunk(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn scratch_file(dir: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix("wharf-bench-ceiling-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a scratch file in {}", dir.display()))
}

fn disk_write(dir: &Path, max_bytes: u64, max_time: Duration) -> anyhow::Result<f64> {
    let scratch = scratch_file(dir)?;
    let mut file: &File = scratch.as_file();
    let buf = chunk(MIB);
    let start = Instant::now();
    let mut written = 0u64;
    while written < max_bytes && start.elapsed() < max_time {
        file.write_all(&buf)?;
        written += buf.len() as u64;
    }
    file.sync_all()?;
    Ok(mb_per_sec(written, start.elapsed().as_secs_f64()))
}

fn disk_sync(dir: &Path, max_bytes: u64, max_time: Duration) -> anyhow::Result<f64> {
    let scratch = scratch_file(dir)?;
    let mut file: &File = scratch.as_file();
    let buf = chunk(MIB);
    let start = Instant::now();
    let mut written = 0u64;
    while written < max_bytes && start.elapsed() < max_time {
        file.write_all(&buf)?;
        file.sync_data()?;
        written += buf.len() as u64;
    }
    Ok(mb_per_sec(written, start.elapsed().as_secs_f64()))
}

/// Microsecond histogram of fdatasync after each 4 KiB append.
fn fdatasync_latency(
    dir: &Path,
    max_appends: u32,
    max_time: Duration,
) -> anyhow::Result<Histogram<u64>> {
    let scratch = scratch_file(dir)?;
    let mut file: &File = scratch.as_file();
    let buf = chunk(4096);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let start = Instant::now();
    let mut appends = 0;
    while appends < max_appends && start.elapsed() < max_time {
        file.write_all(&buf)?;
        let before = Instant::now();
        file.sync_data()?;
        histogram.saturating_record(before.elapsed().as_micros() as u64);
        appends += 1;
    }
    Ok(histogram)
}

fn loopback(max_bytes: u64, max_time: Duration) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let receiver = std::thread::spawn(move || -> std::io::Result<(u64, Duration)> {
        let (mut stream, _) = listener.accept()?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut received = 0u64;
        let mut first_byte: Option<Instant> = None;
        loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            first_byte.get_or_insert_with(Instant::now);
            received += n as u64;
        }
        Ok((received, first_byte.map_or(Duration::ZERO, |t| t.elapsed())))
    });
    let mut stream = TcpStream::connect(addr)?;
    let buf = chunk(256 * 1024);
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < max_bytes && start.elapsed() < max_time {
        stream.write_all(&buf)?;
        sent += buf.len() as u64;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    let (received, elapsed) = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("loopback receiver thread panicked"))??;
    Ok(mb_per_sec(received, elapsed.as_secs_f64()))
}
