//! A progress bar on stderr for runs longer than a few seconds; silent otherwise (and when
//! stderr is not a terminal).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Runs expected to be shorter than this get no bar.
const MIN_VISIBLE: Duration = Duration::from_secs(3);
const STEPS: u64 = 1000;

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(label: &str, expected: Duration) -> Progress {
        if expected < MIN_VISIBLE {
            return Progress { bar: None };
        }
        let bar = ProgressBar::new(STEPS);
        if let Ok(style) =
            ProgressStyle::with_template("{prefix:>22} [{elapsed_precise}] {wide_bar} {msg}")
        {
            bar.set_style(style);
        }
        bar.set_prefix(label.to_string());
        Progress { bar: Some(bar) }
    }

    /// `fraction` of the work done (clamped to 0..=1), and a short status.
    pub fn update(&self, fraction: f64, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_position((fraction.clamp(0.0, 1.0) * STEPS as f64) as u64);
            bar.set_message(message);
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
