//! Progress of the CLI's long commands (`ctl drain --wait`, `rebalance`, `upgrade --apply`,
//! `backup`, `restore`, `bench rebuild`): on a terminal, an `indicatif` bar with the count
//! done, the total, the rate and an ETA; otherwise (a pipe, a log, CI, `--json`) plain
//! lines on stdout, one each time the count or the message changes, which scripts and the
//! tests read. Owns nothing else; commands decide what they count.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One long operation's progress.
pub struct Progress {
    bar: Option<ProgressBar>,
    /// Plain mode: what it counts, and the last (done, message) printed.
    what: String,
    unit: &'static str,
    last: Mutex<Option<(u64, String)>>,
    total: std::sync::atomic::AtomicU64,
    started: Instant,
    quiet: bool,
}

impl Progress {
    /// Counting `total` `unit`s of `what` (`"node 5"`, `"partitions"`...): a bar when stdout
    /// is a terminal, plain lines otherwise; nothing at all when `quiet` (`--json`, whose
    /// one document says it all).
    pub fn new(what: impl Into<String>, unit: &'static str, total: u64, quiet: bool) -> Self {
        let what = what.into();
        let bar = (!quiet && std::io::stdout().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stdout());
            // A fixed template around a plain word: it parses, so the fallback is not used.
            let template =
                format!("{{prefix}} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {unit} (ETA {{eta}}) {{msg}}");
            let style = ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(what.clone());
            bar
        });
        Progress {
            bar,
            what,
            unit,
            last: Mutex::new(None),
            total: std::sync::atomic::AtomicU64::new(total),
            started: Instant::now(),
            quiet,
        }
    }

    /// A bar on a terminal and nothing otherwise: for a benchmark, whose report is what a
    /// pipe wants.
    pub fn bar_only(what: impl Into<String>, unit: &'static str, total: u64) -> Self {
        let mut p = Self::new(what, unit, total, false);
        p.quiet = true;
        p
    }

    /// The total changed (more work found on the way).
    pub fn set_total(&self, total: u64) {
        self.total.store(total, std::sync::atomic::Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_length(total);
        }
    }

    /// `done` of the total, and what it is doing now.
    pub fn set(&self, done: u64, message: &str) {
        if let Some(b) = &self.bar {
            b.set_position(done);
            b.set_message(message.to_string());
            return;
        }
        if self.quiet {
            return;
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_ref().is_some_and(|(d, m)| *d == done && m == message) {
            return;
        }
        *last = Some((done, message.to_string()));
        let line = format!(
            "[{:>6.1} s] {}: {done}/{} {}{}{message}",
            self.started.elapsed().as_secs_f64(),
            self.what,
            self.total.load(std::sync::atomic::Ordering::Relaxed),
            self.unit,
            if message.is_empty() { "" } else { "; " }
        );
        let _ = writeln!(std::io::stdout(), "{line}");
    }

    /// Done: the bar is finished with `message`, or `message` is printed.
    pub fn finish(&self, message: &str) {
        match &self.bar {
            Some(b) => b.finish_with_message(message.to_string()),
            None if !self.quiet => {
                let _ = writeln!(std::io::stdout(), "{message}");
            }
            None => {}
        }
    }
}
