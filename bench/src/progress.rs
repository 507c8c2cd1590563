//! Where a bench's running commentary goes: plain lines when it runs on its
//! own (`meridian-bench ingest`, `meridian-bench fanout`), or the one status line of `bench
//! all`, which says which section and step it is in, how long it has run
//! and how long it should still take.
//!
//! On a terminal the status line is rewritten in place (`\r`); when the
//! output is a file or a pipe every step is a line of its own, so a CI log
//! still shows where a run stopped.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The sink a bench writes its steps and per-second figures to.
#[derive(Clone)]
pub enum Say {
    /// Standalone: steps are printed as lines; per-second figures rewrite
    /// one line on a terminal.
    Print,
    /// Inside `meridian-bench all`: everything updates its status line.
    Status(Arc<Status>),
}

impl Say {
    /// A step: something that happened and stays worth reading.
    pub fn step(&self, line: &str) {
        match self {
            Say::Print => println!("{line}"),
            Say::Status(status) => status.step(line),
        }
    }

    /// A figure that the next one replaces (one a second while measuring).
    pub fn tick(&self, line: &str) {
        match self {
            Say::Print if std::io::stdout().is_terminal() => {
                print!("\r\x1b[2K{line}");
                let _ = std::io::stdout().flush();
            }
            Say::Print => println!("{line}"),
            Say::Status(status) => status.tick(line),
        }
    }

    /// Clears what `tick` left on a terminal before the next plain line.
    pub fn end_ticks(&self) {
        if let Say::Print = self {
            if std::io::stdout().is_terminal() {
                print!("\r\x1b[2K");
                let _ = std::io::stdout().flush();
            }
        }
    }
}

/// The sections of a run and their estimated durations, and the one line
/// that shows where the run is.
pub struct Status {
    started: Instant,
    tty: bool,
    state: Mutex<State>,
}

struct State {
    /// (name, estimated duration) of every section, in order.
    plan: Vec<(String, Duration)>,
    /// Index of the running section and when it started.
    current: usize,
    section_started: Instant,
    step: String,
    /// When a plain (non-terminal) tick line was last printed.
    last_plain_tick: Option<Instant>,
}

/// Plain tick lines (output not a terminal) at most this often.
const PLAIN_TICK_EVERY: Duration = Duration::from_secs(5);

impl Status {
    pub fn new(plan: Vec<(String, Duration)>) -> Arc<Status> {
        let now = Instant::now();
        Arc::new(Status {
            started: now,
            tty: std::io::stderr().is_terminal(),
            state: Mutex::new(State {
                plan,
                current: 0,
                section_started: now,
                step: String::new(),
                last_plain_tick: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enters section `index` of the plan.
    pub fn section(&self, index: usize) {
        let mut state = self.lock();
        state.current = index;
        state.section_started = Instant::now();
        state.step = "starting".into();
        self.show(&state, true);
    }

    pub fn step(&self, line: &str) {
        let mut state = self.lock();
        state.step = line.to_string();
        self.show(&state, true);
    }

    pub fn tick(&self, line: &str) {
        let mut state = self.lock();
        state.step = line.to_string();
        let due = state
            .last_plain_tick
            .is_none_or(|at| at.elapsed() >= PLAIN_TICK_EVERY);
        if self.tty || due {
            state.last_plain_tick = Some(Instant::now());
            self.show(&state, !self.tty);
        }
    }

    /// Rewrites the line with the current elapsed time (called every second).
    pub fn refresh(&self) {
        if self.tty {
            let state = self.lock();
            self.show(&state, false);
        }
    }

    /// Clears the status line (before the report is printed).
    pub fn finish(&self) {
        if self.tty {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn show(&self, state: &State, plain_line: bool) {
        let line = status_line(
            &state.plan,
            state.current,
            state.section_started.elapsed(),
            self.started.elapsed(),
            &state.step,
        );
        if self.tty {
            // One line, cut to a terminal's usual width so it never wraps.
            let cut: String = line.chars().take(160).collect();
            eprint!("\r\x1b[2K{cut}");
            let _ = std::io::stderr().flush();
        } else if plain_line {
            eprintln!("{line}");
        }
    }
}

/// `[2/4 fan-out] <step> | 1m05s elapsed, ~4m10s left`: the remaining time
/// is what is left of the current section's estimate (at least nothing)
/// plus the estimates of the sections after it.
pub fn status_line(
    plan: &[(String, Duration)],
    current: usize,
    in_section: Duration,
    elapsed: Duration,
    step: &str,
) -> String {
    let left: Duration = plan
        .get(current)
        .map_or(Duration::ZERO, |(_, est)| est.saturating_sub(in_section))
        + plan
            .iter()
            .skip(current + 1)
            .map(|(_, est)| *est)
            .sum::<Duration>();
    let name = plan.get(current).map_or("", |(n, _)| n.as_str());
    format!(
        "[{}/{} {name}] {step} | {} elapsed, ~{} left",
        current + 1,
        plan.len(),
        clock(elapsed),
        clock(left)
    )
}

/// `1m05s`, or `42s` under a minute.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_section_and_estimates_what_is_left() {
        let plan = vec![
            ("ingest".to_string(), Duration::from_secs(60)),
            ("fan-out".to_string(), Duration::from_secs(120)),
            ("night".to_string(), Duration::from_secs(90)),
        ];
        let line = status_line(
            &plan,
            1,
            Duration::from_secs(20),
            Duration::from_secs(85),
            "100 clients, frontend",
        );
        assert_eq!(
            line,
            "[2/3 fan-out] 100 clients, frontend | 1m25s elapsed, ~3m10s left"
        );
        // A section over its estimate adds nothing of its own.
        let late = status_line(&plan, 2, Duration::from_secs(200), Duration::from_secs(500), "x");
        assert!(late.ends_with("~0s left"), "{late}");
    }
}
