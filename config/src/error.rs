//! The one error type of this crate and the per-key problem it carries.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a configuration could not be used. Every variant is meant to be
/// printed to the operator as is and end the process with a non-zero exit
/// code: none of them can be fixed without editing the file or the command
/// line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, a directory, not
    /// UTF-8). Fix `--config` or the file's permissions.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        /// The file named by `--config`.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// The text is not TOML, or does not have the shape of [`crate::Config`]:
    /// a syntax error, an unknown key (often a typo) or a value of the wrong
    /// type. `message` is toml's own, with the line, column and offending
    /// key, followed by the full key path when it could be found. Fix the
    /// line it points at.
    #[error("invalid configuration{}:\n{message}", path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Parse {
        /// The file the text came from; `None` for [`crate::Config::from_toml_str`].
        path: Option<PathBuf>,
        /// toml's message, multi-line, ready to print.
        message: String,
    },

    /// The file is well-formed but some values are out of range or
    /// inconsistent. Every problem found is listed, so one edit can fix them
    /// all.
    #[error("{}", InvalidList(.0))]
    Invalid(Vec<Invalid>),
}

/// One value that failed validation, named by its full TOML key path.
///
/// Displays as `frontend.client_queue: expected an integer from 16 to
/// 1000000, found 3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Full TOML key path, e.g. `frontend.client_queue`,
    /// `producer.rates.forceActuatorData` or `frontend.tokens[2]`.
    pub key: String,
    /// What an acceptable value looks like, phrased to follow "expected".
    pub expected: String,
    /// What the configuration holds, phrased to follow "found". Secrets
    /// (browser tokens) are described, never echoed.
    pub found: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected {}, found {}",
            self.key, self.expected, self.found
        )
    }
}

/// Display helper: a header line, then one line per problem.
struct InvalidList<'a>(&'a [Invalid]);

impl fmt::Display for InvalidList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for problem in self.0 {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}
