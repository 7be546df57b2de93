//! `wharf storage verify`: checks every entry of every segment of a data directory (the broker
//! must be stopped) and reports damaged byte ranges.

use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum StorageCommand {
    /// Check every checksum in a data directory; exit status 1 when damage is found.
    Verify {
        #[arg(long, default_value = "./wharf-data")]
        data_dir: PathBuf,
    },
}

/// Runs the command; returns whether the data is undamaged.
pub fn run(cmd: &StorageCommand) -> anyhow::Result<bool> {
    match cmd {
        StorageCommand::Verify { data_dir } => {
            let report = wharf_storage::verify(data_dir)?;
            println!(
                "segments: {}  batches: {}  bytes: {}",
                report.segments, report.batches, report.bytes
            );
            if report.damaged.is_empty() {
                println!("no damage found");
                return Ok(true);
            }
            println!("DAMAGED RANGES");
            for d in &report.damaged {
                println!(
                    "{}  bytes {}..{}  ({})",
                    d.segment.display(),
                    d.start,
                    d.end,
                    d.reason
                );
            }
            Ok(false)
        }
    }
}
