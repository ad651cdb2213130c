//! What dlgrab tells its user: one line per layer written, the phase it is
//! in, and the bytes of long steps (done of the total, rate, time left).
//!
//! On a terminal (stderr is one, `NO_COLOR` is unset and `TERM` is not
//! `dumb`) phases and byte counts are live bars on stderr. Elsewhere (a
//! pipe, a CI log, `NO_COLOR`) the same news comes as plain lines on stderr:
//! each new phase once, and a long step's bytes at most every
//! [`LINE_EVERY`]. With `-q` nothing but errors.

use std::fmt::Write as _;
use std::io::{IsTerminal, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{
    HumanBytes, HumanDuration, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState,
    ProgressStyle,
};

/// How often a long step prints a line of progress when stderr is not a
/// terminal.
pub(crate) const LINE_EVERY: Duration = Duration::from_secs(10);
/// How long a rate is left unsaid: the first chunks give silly rates.
const RATE_AFTER: Duration = Duration::from_secs(1);

/// Where messages and progress go.
#[derive(Debug)]
pub(crate) struct Reporter {
    display: Display,
    /// Messages go to stderr when stdout carries data (`--json`, `-o -`).
    messages_to_stderr: bool,
    spinner: Mutex<Option<ProgressBar>>,
    /// The phase last printed as a line.
    last_phase: Mutex<String>,
}

/// How progress is shown.
#[derive(Debug)]
pub(crate) enum Display {
    /// `-q`: nothing but errors.
    Quiet,
    /// A terminal: live bars on stderr.
    Bars(MultiProgress),
    /// Not a terminal, or `NO_COLOR`: plain lines on stderr.
    Lines,
}

impl Display {
    /// The display for this process: bars only where stderr is a terminal
    /// that may be drawn on.
    pub(crate) fn for_stderr(quiet: bool) -> Self {
        let plain = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
            || std::env::var("TERM").is_ok_and(|t| t == "dumb");
        if quiet {
            Display::Quiet
        } else if std::io::stderr().is_terminal() && !plain {
            Display::Bars(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
        } else {
            Display::Lines
        }
    }
}

impl Reporter {
    pub(crate) fn new(quiet: bool, json: bool) -> Self {
        Self::with_display(Display::for_stderr(quiet), json)
    }

    pub(crate) fn with_display(display: Display, messages_to_stderr: bool) -> Self {
        Self {
            display,
            messages_to_stderr,
            spinner: Mutex::new(None),
            last_phase: Mutex::new(String::new()),
        }
    }

    /// One of the user-facing messages (a layer written, a leftover swept).
    pub(crate) fn message(&self, text: impl AsRef<str>) {
        let text = text.as_ref();
        match &self.display {
            Display::Quiet => {}
            Display::Bars(bars) => {
                // Keeps the bars intact below the message.
                if self.messages_to_stderr {
                    let _ = bars.println(text);
                } else {
                    let _ = bars.suspend(|| writeln!(std::io::stdout(), "{text}"));
                }
            }
            Display::Lines if self.messages_to_stderr => {
                let _ = writeln!(std::io::stderr(), "{text}");
            }
            Display::Lines => {
                let _ = writeln!(std::io::stdout(), "{text}");
            }
        }
    }

    /// The phase dlgrab is in now: a spinner's label on a terminal, a line
    /// (once per new phase) elsewhere.
    pub(crate) fn phase(&self, text: impl Into<String>) {
        let text = text.into();
        match &self.display {
            Display::Quiet => {}
            Display::Bars(bars) => {
                let mut spinner = self.spinner.lock().unwrap_or_else(|e| e.into_inner());
                let bar = spinner.get_or_insert_with(|| {
                    let bar = bars.add(ProgressBar::new_spinner());
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar
                });
                bar.set_message(text);
            }
            Display::Lines => {
                let mut last = self.last_phase.lock().unwrap_or_else(|e| e.into_inner());
                if *last != text {
                    let _ = writeln!(std::io::stderr(), "dlgrab: {text}");
                    *last = text;
                }
            }
        }
    }

    /// The bytes of one long step (a layer, a stream, a copy): `total`
    /// when known beforehand (it grows if more comes).
    pub(crate) fn progress(&self, label: impl Into<String>, total: Option<u64>) -> Progress {
        let label = label.into();
        let shown = match &self.display {
            Display::Quiet => None,
            Display::Bars(bars) => {
                let bar = match total {
                    Some(total) => ProgressBar::new(total).with_style(style(
                        "{msg:28!} {bar:24} {bytes:>10}/{total_bytes:<10} {rate:>12} {left}",
                    )),
                    None => ProgressBar::new_spinner()
                        .with_style(style("{msg:28!} {spinner} {bytes:>10} {rate:>12}")),
                };
                let bar = bars.add(bar.with_message(label));
                bar.enable_steady_tick(Duration::from_millis(250));
                Some(Shown::Bar(bar))
            }
            Display::Lines => {
                let now = Instant::now();
                Some(Shown::Lines(Mutex::new(Counted {
                    label,
                    total,
                    done: 0,
                    started: now,
                    printed: now,
                })))
            }
        };
        Progress {
            shown: shown.map(Arc::new),
        }
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
        if let Display::Bars(bars) = &self.display {
            let _ = bars.clear();
        }
    }
}

/// A bar's style with the `rate` and `left` keys, which stay blank for the
/// first [`RATE_AFTER`].
fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                if state.elapsed() >= RATE_AFTER {
                    let _ = write!(w, "{}/s", HumanBytes(state.per_sec() as u64));
                }
            },
        )
        .with_key(
            "left",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                if state.elapsed() >= RATE_AFTER && state.len().is_some() {
                    let _ = write!(w, "{} left", HumanDuration(state.eta()));
                }
            },
        )
}

/// The bytes of one long step; cheap to clone, and a no-op with `-q`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress {
    shown: Option<Arc<Shown>>,
}

#[derive(Debug)]
enum Shown {
    Bar(ProgressBar),
    Lines(Mutex<Counted>),
}

#[derive(Debug)]
struct Counted {
    label: String,
    total: Option<u64>,
    done: u64,
    started: Instant,
    printed: Instant,
}

impl Counted {
    /// "layer 2: 120.0 MiB of 256.0 MiB (46%), 95.3 MiB/s, 2s left".
    fn line(&self, now: Instant) -> String {
        let mut line = format!("{}: {}", self.label, HumanBytes(self.done));
        if let Some(total) = self.total.filter(|&t| t > 0) {
            let _ = write!(
                line,
                " of {} ({}%)",
                HumanBytes(total),
                self.done.saturating_mul(100) / total
            );
        }
        let elapsed = now.duration_since(self.started);
        if elapsed >= RATE_AFTER && self.done > 0 {
            let rate = self.done as f64 / elapsed.as_secs_f64();
            let _ = write!(line, ", {}/s", HumanBytes(rate as u64));
            if let Some(total) = self.total {
                let left = total.saturating_sub(self.done) as f64 / rate;
                let _ = write!(
                    line,
                    ", {} left",
                    HumanDuration(Duration::from_secs_f64(left))
                );
            }
        }
        line
    }
}

impl Progress {
    /// `n` more bytes done.
    pub(crate) fn inc(&self, n: u64) {
        match self.shown.as_deref() {
            None => {}
            Some(Shown::Bar(bar)) => {
                bar.inc(n);
                if bar.length().is_some_and(|len| bar.position() > len) {
                    bar.set_length(bar.position());
                }
            }
            Some(Shown::Lines(counted)) => {
                let mut c = counted.lock().unwrap_or_else(|e| e.into_inner());
                c.done += n;
                let done = c.done;
                if let Some(total) = c.total.as_mut() {
                    *total = (*total).max(done);
                }
                let now = Instant::now();
                if now.duration_since(c.printed) >= LINE_EVERY {
                    c.printed = now;
                    let _ = writeln!(std::io::stderr(), "dlgrab: {}", c.line(now));
                }
            }
        }
    }

    /// `done` bytes done in all.
    pub(crate) fn set_position(&self, done: u64) {
        let before = match self.shown.as_deref() {
            None => return,
            Some(Shown::Bar(bar)) => bar.position(),
            Some(Shown::Lines(counted)) => counted.lock().unwrap_or_else(|e| e.into_inner()).done,
        };
        self.inc(done.saturating_sub(before));
    }

    /// `read`, counting what is read from it.
    pub(crate) fn counting<R>(&self, read: R) -> Counting<R> {
        Counting {
            inner: read,
            progress: self.clone(),
        }
    }

    /// The step is over: its bar goes (the caller prints the line saying
    /// what was done).
    pub(crate) fn finish(&self) {
        if let Some(Shown::Bar(bar)) = self.shown.as_deref() {
            bar.finish_and_clear();
        }
    }
}

/// A reader that counts the bytes read through it into a [`Progress`].
#[derive(Debug)]
pub(crate) struct Counting<R> {
    inner: R,
    progress: Progress,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.inc(n as u64);
        Ok(n)
    }
}

/// A size as people read it: `1.0 KiB`, `256.0 MiB`.
pub(crate) fn bytes(n: u64) -> String {
    HumanBytes(n).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_done_of_total_rate_and_time_left() {
        let started = Instant::now();
        let counted = Counted {
            label: "layer 2".into(),
            total: Some(256 << 20),
            done: 64 << 20,
            started,
            printed: started,
        };
        assert_eq!(
            counted.line(started + Duration::from_secs(2)),
            "layer 2: 64.00 MiB of 256.00 MiB (25%), 32.00 MiB/s, 6 seconds left"
        );
        // Before a second has passed, no rate and no time left.
        assert_eq!(
            counted.line(started + Duration::from_millis(300)),
            "layer 2: 64.00 MiB of 256.00 MiB (25%)"
        );
        let open = Counted {
            total: None,
            ..counted
        };
        assert_eq!(
            open.line(started + Duration::from_secs(4)),
            "layer 2: 64.00 MiB, 16.00 MiB/s"
        );
    }

    #[test]
    fn counting_reads_count_every_byte_and_totals_grow() {
        let reporter = Reporter::with_display(Display::Lines, true);
        let progress = reporter.progress("stream", Some(4));
        let mut read = progress.counting(&b"0123456789"[..]);
        let mut sink = Vec::new();
        std::io::copy(&mut read, &mut sink).expect("read");
        let Some(Shown::Lines(counted)) = progress.shown.as_deref() else {
            panic!("lines expected");
        };
        let c = counted.lock().expect("lock");
        assert_eq!((c.done, c.total), (10, Some(10)));
    }

    #[test]
    fn quiet_shows_nothing_and_counts_nothing() {
        let reporter = Reporter::with_display(Display::Quiet, false);
        let progress = reporter.progress("layer 0", Some(10));
        progress.inc(5);
        assert!(progress.shown.is_none());
    }
}
