//! What dlgrab tells its user: the original DLGrab's messages, progress bars
//! on stderr when it is a terminal, and machine-readable results.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where messages and progress go.
#[derive(Debug)]
pub(crate) struct Reporter {
    quiet: bool,
    /// Messages go to stderr when stdout carries data (`--json`).
    messages_to_stderr: bool,
    bars: Option<MultiProgress>,
    spinner: Mutex<Option<ProgressBar>>,
}

impl Reporter {
    pub(crate) fn new(quiet: bool, json: bool) -> Self {
        let bars = (!quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self {
            quiet,
            messages_to_stderr: json,
            bars,
            spinner: Mutex::new(None),
        }
    }

    /// One of the user-facing messages ("Full layer id found: …").
    pub(crate) fn message(&self, text: impl AsRef<str>) {
        if self.quiet {
            return;
        }
        let text = text.as_ref();
        if let Some(bars) = &self.bars {
            // Keeps the bars intact below the message.
            if self.messages_to_stderr {
                let _ = bars.println(text);
                return;
            }
            let _ = bars.suspend(|| writeln!(std::io::stdout(), "{text}"));
            return;
        }
        let _ = if self.messages_to_stderr {
            writeln!(std::io::stderr(), "{text}")
        } else {
            writeln!(std::io::stdout(), "{text}")
        };
    }

    /// A spinner naming the current phase, on terminals only.
    pub(crate) fn phase(&self, text: impl Into<String>) {
        let Some(bars) = &self.bars else { return };
        let mut spinner = self.spinner.lock().unwrap_or_else(|e| e.into_inner());
        let bar = spinner.get_or_insert_with(|| {
            let bar = bars.add(ProgressBar::new_spinner());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        bar.set_message(text.into());
    }

    /// A byte counter for one blob or layer, on terminals only.
    pub(crate) fn bytes_bar(
        &self,
        label: impl Into<String>,
        total: Option<u64>,
    ) -> Option<ProgressBar> {
        let bars = self.bars.as_ref()?;
        let bar = match total {
            Some(total) => ProgressBar::new(total).with_style(
                ProgressStyle::with_template(
                    "{msg:24} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{msg:24} {spinner} {bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        let bar = bars.add(bar.with_message(label.into()));
        Some(bar)
    }

    /// Removes the spinner and every bar.
    pub(crate) fn finish(&self) {
        if let Some(spinner) = self
            .spinner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            spinner.finish_and_clear();
        }
        if let Some(bars) = &self.bars {
            let _ = bars.clear();
        }
    }
}
