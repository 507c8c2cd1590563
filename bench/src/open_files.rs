//! The open-file limit of a bench that drives thousands of browsers: each
//! connection is a file descriptor in the server and one in the load
//! generator, so the soft limit is raised to the hard one when needed.

use std::process::Command;

/// Makes sure this process (and the load generator it starts) may open
/// `need` files, raising the soft limit to the hard one with `prlimit` if
/// needed; the reason if it cannot.
pub fn ensure_fds(need: u64) -> Result<(), String> {
    let (soft, hard) = nofile_limits().ok_or("cannot read /proc/self/limits")?;
    if soft >= need {
        return Ok(());
    }
    if hard < need {
        return Err(format!(
            "needs {need} open files but the hard limit is {hard} (raise it, e.g. `ulimit -Hn {need}` as root)"
        ));
    }
    let raised = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={hard}:{hard}"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    match nofile_limits() {
        Some((soft, _)) if raised && soft >= need => Ok(()),
        _ => Err(format!(
            "needs {need} open files, the soft limit is {soft} and `prlimit` could not raise it (run `ulimit -n {hard}` first)"
        )),
    }
}

/// The soft and hard limits on open files, from `/proc/self/limits`.
fn nofile_limits() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut numbers = line["Max open files".len()..].split_whitespace();
    let parse = |v: Option<&str>| match v? {
        "unlimited" => Some(u64::MAX),
        v => v.parse().ok(),
    };
    Some((parse(numbers.next())?, parse(numbers.next())?))
}
