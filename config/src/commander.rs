//! `[commander]`: the service that sends commands to CSCs on behalf of
//! browsers, operators' scripts and the replaced system's manager.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::csc::{check_name, parse_csc};
use crate::validate::{key_path, Problems};

/// Longest timeout any command may be given, in milliseconds (10 minutes):
/// longer than the slowest observatory command (a mount slew, a mirror
/// raise), short enough that a stuck request is noticed within a shift.
pub const MAX_COMMAND_TIMEOUT_MS: u64 = 600_000;

/// `[commander]`: read by the commander role.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommanderConfig {
    /// TCP address of the commander's HTTP server, `"ip:port"`. Default
    /// `"0.0.0.0:8081"`, next to the frontend's 8080. Port 0 picks a free
    /// port (tests).
    pub listen: SocketAddr,

    /// How long a command may take before the caller is told it timed
    /// out, in milliseconds, 1 to 600000 (10 minutes), for every command
    /// without an entry in `commander.timeouts_ms`. Default 10000, the
    /// replaced system's: most commands are acknowledged within a second.
    pub command_timeout_ms: u64,

    /// Per-command timeouts, `"CSC.command"` to milliseconds (1 to
    /// 600000), e.g. `"MTMount.moveToTarget" = 60000`: commands that
    /// legitimately run long get their own, without raising the default
    /// for every other one. Default empty.
    pub timeouts_ms: BTreeMap<String, u64>,

    /// Who may use the API: each entry a named bearer token with its
    /// scopes (see [`CommanderToken`]). Default empty: every request that
    /// needs a token is refused (401); `meridian up` adds a development
    /// token. Errors and logs name a token by its `name`, never its value.
    pub tokens: Vec<CommanderToken>,

    /// Sustained requests per second one token may make (a token bucket
    /// refilled at this rate), greater than 0 and at most 10000. Default
    /// 5: far above what an operator clicks, low enough that a runaway
    /// script cannot flood a CSC. Above it, requests are answered 429 with
    /// `Retry-After`. A token's `rate_limit_per_s` overrides it.
    pub rate_limit_per_s: f64,

    /// Requests one token may make in a burst before the rate applies
    /// (the bucket's size), 1 to 100000. Default 20: a script can send a
    /// short sequence (start, enable, configure) at once. A token's
    /// `rate_limit_burst` overrides it.
    pub rate_limit_burst: u32,

    /// Audit entries kept (the store stream `meridian:commander:audit`,
    /// trimmed like `XADD MAXLEN ~`), 1 to 10000000. Default 100000: at
    /// about 0.5 KB each, 50 MB, weeks of a busy night's commands.
    pub audit_maxlen: usize,

    /// Days an audit entry is kept, 1 to 3650. Default 90. Older entries
    /// are removed (`XTRIM MINID`) at most once a minute as entries are
    /// written; `audit_maxlen` still bounds the count. Requests without a
    /// valid token are audited at most one per reason per 10 minutes, so a
    /// flood adds at most about 600 entries a day and cannot push accepted
    /// commands out of a log sized for the retention.
    pub audit_retention_days: u32,

    /// Failed authentications (no token, a malformed or unknown one) one
    /// client address may make per second (a token bucket per address,
    /// charged only by failures), greater than 0 and at most 10000.
    /// Default 1. Once an address's bucket is empty, every request from it
    /// to a route that needs a token is answered 429 with `Retry-After`
    /// *before* its token is compared, and is counted in `/metrics`
    /// (`meridian_commander_refused_total{reason="address_rate_limited"}`)
    /// rather than audited. Callers with a valid token never charge it;
    /// they have their token's limits.
    pub address_rate_limit_per_s: f64,

    /// Failed authentications one address may make in a burst before
    /// `address_rate_limit_per_s` applies, 1 to 100000. Default 10: a
    /// mistyped token is retried a few times without a wait.
    pub address_rate_limit_burst: u32,

    /// This is a development run: a standalone commander (`meridian
    /// commander`) may start without `commander.tokens` or with the public
    /// `dev-token` among them. Default false: it refuses to start, naming
    /// this key. `meridian up` is always a development run; the global flag
    /// `--dev` sets this too.
    pub dev_tokens: bool,
}

/// One entry of `commander.tokens`: a bearer token and what it may do.
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommanderToken {
    /// Who holds the token (a person, a group, a script): what the audit
    /// log and the logs record instead of the token itself. Unique,
    /// non-empty, of ASCII letters, digits and `_ - . @`. Required.
    pub name: String,

    /// The secret, sent as `Authorization: Bearer <token>` (or the
    /// replaced system's `Authorization: Token <token>`). Unique,
    /// non-empty, without whitespace; use a long random string. Required.
    pub token: String,

    /// CSC instances the token may command: `"NAME"` (every SAL index of
    /// that CSC), `"NAME:INDEX"` (one instance) or `"*"` (every CSC).
    /// Default empty: a read-only token, which may read the audit log but
    /// not send commands.
    #[serde(default)]
    pub cscs: Vec<String>,

    /// Commands the token may send to those CSCs: command names without
    /// the `cmd_` prefix (`"moveAzimuth"`), or `"*"` for every command.
    /// Default `["*"]`.
    #[serde(default = "every_command")]
    pub commands: Vec<String>,

    /// This token's sustained requests per second, overriding
    /// `commander.rate_limit_per_s` (same range). Default: that value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_s: Option<f64>,

    /// This token's burst, overriding `commander.rate_limit_burst` (same
    /// range). Default: that value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_burst: Option<u32>,
}

fn every_command() -> Vec<String> {
    vec!["*".to_string()]
}

/// Never prints the secret: a configuration may end up in a panic message
/// or a failed assertion.
impl fmt::Debug for CommanderToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommanderToken")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .field("cscs", &self.cscs)
            .field("commands", &self.commands)
            .field("rate_limit_per_s", &self.rate_limit_per_s)
            .field("rate_limit_burst", &self.rate_limit_burst)
            .finish()
    }
}

/// One entry of a token's `cscs`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CscPattern {
    /// `"*"`: every CSC.
    Any,
    /// `"NAME"`: every SAL index of one CSC.
    Name(String),
    /// `"NAME:INDEX"`: one instance.
    Instance(String, u32),
}

impl CscPattern {
    /// Parses `"*"`, `"NAME"` or `"NAME:INDEX"`; the error says what is wrong.
    pub fn parse(s: &str) -> Result<CscPattern, String> {
        if s == "*" {
            return Ok(CscPattern::Any);
        }
        let (name, index) = parse_csc(s)?;
        Ok(if s.contains(':') {
            CscPattern::Instance(name, index)
        } else {
            CscPattern::Name(name)
        })
    }

    /// Whether instance `salindex` of `csc` matches.
    pub fn matches(&self, csc: &str, salindex: u32) -> bool {
        match self {
            CscPattern::Any => true,
            CscPattern::Name(name) => name == csc,
            CscPattern::Instance(name, index) => name == csc && *index == salindex,
        }
    }
}

impl CommanderConfig {
    /// The timeout of `command` of `csc`, in milliseconds: its entry in
    /// `commander.timeouts_ms`, else `commander.command_timeout_ms`.
    pub fn timeout_ms(&self, csc: &str, command: &str) -> u64 {
        self.timeouts_ms
            .get(&format!("{csc}.{command}"))
            .copied()
            .unwrap_or(self.command_timeout_ms)
    }

    /// Why a standalone commander may not start with these tokens: none,
    /// or the public `dev-token`, and this is not a development run.
    pub fn refuse_dev_token(&self) -> Option<String> {
        if self.dev_tokens {
            return None;
        }
        if self.tokens.is_empty() {
            return Some(
                "commander.tokens is empty: every command would be refused; set commander.tokens, \
                 or set commander.dev_tokens = true (or pass --dev) for a development run"
                    .to_string(),
            );
        }
        self.tokens
            .iter()
            .any(|t| t.token == crate::frontend::DEV_TOKEN)
            .then(|| {
                "commander.tokens: the public development token \"dev-token\" is accepted; \
             use your own token, or set commander.dev_tokens = true (or pass --dev) for a development run"
                    .to_string()
            })
    }

    pub(crate) fn check(&self, problems: &mut Problems) {
        problems.in_range(
            "commander.command_timeout_ms",
            self.command_timeout_ms,
            1..=MAX_COMMAND_TIMEOUT_MS,
        );
        for (name, &ms) in &self.timeouts_ms {
            let key = key_path("commander.timeouts_ms", name);
            let valid = name.split_once('.').is_some_and(|(csc, command)| {
                check_name("CSC name", csc).is_ok() && check_name("command name", command).is_ok()
            });
            if !valid {
                problems.push(
                    key.clone(),
                    "a key \"CSC.command\" (ASCII letters, digits and _ on each side)",
                    format!("{name:?}"),
                );
            }
            problems.in_range(&key, ms, 1..=MAX_COMMAND_TIMEOUT_MS);
        }
        let mut names = BTreeSet::new();
        let mut secrets = BTreeSet::new();
        for (i, token) in self.tokens.iter().enumerate() {
            token.check(&format!("commander.tokens[{i}]"), problems);
            if !token.name.is_empty() && !names.insert(token.name.as_str()) {
                problems.push(
                    format!("commander.tokens[{i}].name"),
                    "a name no other token has",
                    format!("{:?}, already used", token.name),
                );
            }
            if !token.token.is_empty() && !secrets.insert(token.token.as_str()) {
                problems.push(
                    format!("commander.tokens[{i}].token"),
                    "a token no other entry has (each must identify one holder)",
                    "the token of an earlier entry",
                );
            }
        }
        rate(problems, "commander.rate_limit_per_s", self.rate_limit_per_s);
        problems.in_range("commander.rate_limit_burst", self.rate_limit_burst, 1..=100_000);
        problems.in_range("commander.audit_maxlen", self.audit_maxlen, 1..=10_000_000);
        problems.in_range(
            "commander.audit_retention_days",
            self.audit_retention_days,
            1..=3650,
        );
        rate(
            problems,
            "commander.address_rate_limit_per_s",
            self.address_rate_limit_per_s,
        );
        problems.in_range(
            "commander.address_rate_limit_burst",
            self.address_rate_limit_burst,
            1..=100_000,
        );
    }
}

impl CommanderToken {
    fn check(&self, key: &str, problems: &mut Problems) {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.@".contains(&b));
        if !name_ok {
            problems.push(
                format!("{key}.name"),
                "1 to 64 ASCII letters, digits or _ - . @",
                format!("{:?}", self.name),
            );
        }
        // Never echo the secret, even a malformed one.
        if self.token.is_empty() {
            problems.push(
                format!("{key}.token"),
                "a non-empty token without whitespace",
                "\"\"",
            );
        } else if self.token.chars().any(char::is_whitespace) {
            problems.push(
                format!("{key}.token"),
                "a non-empty token without whitespace",
                "a token containing whitespace",
            );
        }
        for (i, csc) in self.cscs.iter().enumerate() {
            if let Err(reason) = CscPattern::parse(csc) {
                problems.push(
                    format!("{key}.cscs[{i}]"),
                    "\"*\", \"NAME\" or \"NAME:INDEX\" (NAME: ASCII letters, digits and _)",
                    format!("{csc:?} ({reason})"),
                );
            }
        }
        for (i, command) in self.commands.iter().enumerate() {
            if command != "*" {
                if let Err(reason) = check_name("command name", command) {
                    problems.push(
                        format!("{key}.commands[{i}]"),
                        "\"*\" or a command name without the cmd_ prefix",
                        format!("{command:?} ({reason})"),
                    );
                }
            }
        }
        if let Some(per_s) = self.rate_limit_per_s {
            rate(problems, &format!("{key}.rate_limit_per_s"), per_s);
        }
        if let Some(burst) = self.rate_limit_burst {
            problems.in_range(&format!("{key}.rate_limit_burst"), burst, 1..=100_000);
        }
    }
}

/// A request rate: greater than 0 and at most 10000 per second (NaN fails).
fn rate(problems: &mut Problems, key: &str, value: f64) {
    if !(value > 0.0 && value <= 10_000.0) {
        problems.push(
            key,
            "requests per second, greater than 0 and at most 10000",
            value.to_string(),
        );
    }
}

impl Default for CommanderConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8081)),
            command_timeout_ms: 10_000,
            timeouts_ms: BTreeMap::new(),
            tokens: Vec::new(),
            rate_limit_per_s: 5.0,
            rate_limit_burst: 20,
            audit_maxlen: 100_000,
            audit_retention_days: 90,
            address_rate_limit_per_s: 1.0,
            address_rate_limit_burst: 10,
            dev_tokens: false,
        }
    }
}
