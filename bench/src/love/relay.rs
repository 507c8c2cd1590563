//! The replaced system's relay (`bench/love/`: Django Channels with
//! channels_redis, served by daphne): its Python venv, made by
//! `bench/love/setup`, and the versions it runs.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Runs `bench/love/setup` (creates or reuses the venv); the venv's path.
pub(super) fn setup_venv(love_dir: &Path) -> anyhow::Result<PathBuf> {
    let setup = love_dir.join("setup");
    if !setup.exists() {
        bail!(
            "{} not found: run from the repository or give --love-dir",
            setup.display()
        );
    }
    let started = Instant::now();
    let out = Command::new("sh")
        .arg(&setup)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", setup.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): see its message above",
            setup.display(),
            out.status
        );
    }
    let venv = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    if venv.is_empty() {
        bail!("{} printed no venv path", setup.display());
    }
    eprintln!(
        "bench love: relay venv {venv} ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(PathBuf::from(venv))
}

/// The versions the relay runs with, read from the venv itself.
pub(super) fn relay_versions(venv: &Path) -> anyhow::Result<serde_json::Value> {
    let script = "import json, django, channels, channels_redis, daphne; print(json.dumps({'django': django.__version__, \
                  'channels': channels.__version__, 'channels_redis': channels_redis.__version__, \
                  'daphne': daphne.__version__}))";
    let out = Command::new(venv.join("bin/python"))
        .args(["-c", script])
        .output()
        .context("asking the relay venv for its versions")?;
    if !out.status.success() {
        bail!(
            "the relay venv cannot import its packages: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("the relay venv's versions")
}

pub(super) fn versions_line(v: &serde_json::Value) -> String {
    ["django", "channels", "channels_redis", "daphne"]
        .iter()
        .map(|k| format!("{k} {}", v[k].as_str().unwrap_or("?")))
        .collect::<Vec<_>>()
        .join(", ")
}
