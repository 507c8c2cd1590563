//! The executables a bench starts. Its own helpers (the load generators,
//! `love` under `all`) are this executable, `meridian-bench`; the roles
//! under test in their own processes (the night's ingest, frontend and
//! producers, `love`'s frontend) are the `meridian` binary an operator runs,
//! found next to this one in the same target directory unless `--meridian`
//! names it.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

/// The name of the binary of every role.
const MERIDIAN: &str = "meridian";

/// This executable, to start its own helper subcommands.
pub fn bench() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("locating the meridian-bench executable")
}

/// The `meridian` binary: `explicit` (from `--meridian PATH`) if given,
/// else the one beside this executable. The error says how to build it.
pub fn meridian(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match explicit {
        Some(_) => None,
        None => bench()?.parent().map(Path::to_path_buf),
    };
    locate(explicit, dir.as_deref())
}

/// [`meridian`] with this executable's directory given.
fn locate(explicit: Option<&Path>, dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        if !path.is_file() {
            bail!("--meridian {}: no such file", path.display());
        }
        return Ok(path.to_path_buf());
    }
    let dir = dir.context("the meridian-bench executable has no directory")?;
    let path = dir.join(MERIDIAN);
    if !path.is_file() {
        bail!(
            "this bench runs the `meridian` binary, and there is none at {} (next to meridian-bench): \
             build both with `cargo build --release --bins -p meridian -p meridian-bench`, \
             or give its path with --meridian PATH",
            path.display()
        );
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_is_named_with_how_to_build_it() {
        let dir = std::env::temp_dir().join(format!("meridian-bench-binaries-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = locate(None, Some(&dir)).unwrap_err().to_string();
        assert!(err.contains(&dir.join("meridian").display().to_string()), "{err}");
        assert!(err.contains("cargo build --release --bins"), "{err}");
        assert!(err.contains("--meridian PATH"), "{err}");

        std::fs::write(dir.join("meridian"), "").unwrap();
        assert_eq!(locate(None, Some(&dir)).unwrap(), dir.join("meridian"));

        let missing = dir.join("elsewhere");
        let err = locate(Some(&missing), Some(&dir)).unwrap_err().to_string();
        assert!(err.contains("--meridian") && err.contains("elsewhere"), "{err}");
        assert_eq!(
            locate(Some(&dir.join("meridian")), None).unwrap(),
            dir.join("meridian")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
