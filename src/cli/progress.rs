//! Progress of a long command on stderr: a bar redrawn in place on a terminal, a line a second
//! otherwise (a log, a pipe). stdout stays for the result.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Cells of the bar.
const WIDTH: u64 = 30;

pub(super) struct Bar {
    unit: &'static str,
    terminal: bool,
    last: Option<Instant>,
    drawn: bool,
}

impl Bar {
    pub(super) fn new(unit: &'static str) -> Bar {
        Bar {
            unit,
            terminal: std::io::stderr().is_terminal(),
            last: None,
            drawn: false,
        }
    }

    /// Shows `done` of `total`, unless it was shown moments ago (the end is always shown).
    pub(super) fn show(&mut self, done: u64, total: u64) {
        let every = if self.terminal {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(1)
        };
        if done < total && self.last.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        let unit = self.unit;
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let filled = (done * WIDTH)
                .checked_div(total)
                .unwrap_or(WIDTH)
                .min(WIDTH);
            let percent = (done * 100).checked_div(total).unwrap_or(100);
            let bar: String = (0..WIDTH)
                .map(|i| if i < filled { '#' } else { '-' })
                .collect();
            let _ = write!(err, "\r[{bar}] {percent:>3}% {done}/{total} {unit}");
            self.drawn = true;
        } else {
            let _ = writeln!(err, "{done}/{total} {unit}");
        }
    }

    /// Ends the bar's line.
    pub(super) fn finish(&mut self) {
        if self.drawn {
            let _ = writeln!(std::io::stderr());
            self.drawn = false;
        }
    }
}
