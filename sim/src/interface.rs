//! What each CSC publishes and accepts: its telemetry topics, event topics
//! and commands, with every field's kind, array length and units.
//!
//! An [`Interface`] comes from one of two places:
//! - **builtin**: the project's own compact definitions of the simulated
//!   CSCs, `sim/interfaces/<CSC>.txt`, compiled in. Each is a subset of the
//!   site's definitions (whole topics and commands, never some of their
//!   fields) with the nominal telemetry rates the real system publishes at.
//!   `sim/tests/interfaces.rs` checks every topic, field and command against
//!   the site's XML, so the two cannot drift apart unnoticed.
//! - **the site's XML** ([`Interface::from_xml_dir`], defined in [`crate::xml`],
//!   which builds on this module and not the other way round):
//!   every topic of any CSC the observatory defines.
//!
//! # Generic topics
//! Both merge the generics every CSC shares, those the site marks as applying
//! to every component, to every CSC or to configurable CSCs: events
//! `heartbeat`, `summaryState`, `logLevel`, `logMessage`, `softwareVersions`,
//! `errorCode`, `simulationMode`, `configurationApplied`,
//! `configurationsAvailable`; commands `start`, `enable`, `disable`,
//! `standby`, `exitControl`, `setLogLevel`. The opt-in generics (`abort`,
//! `enterControl`, `clockOffset`, `largeFileObjectAvailable`, `statusCode`)
//! are left out. Every CSC gets the same set, `Script` included, to keep one
//! summary-state machine for all (see [`crate::xml::MERGED_GENERIC_CATEGORIES`]).
//! A CSC's own topic of the same name as a generic one is kept instead.
//!
//! # Names and kinds
//! Names are the site's without their prefix: telemetry `MTMount_azimuth` is
//! `azimuth`, event `MTMount_logevent_heartbeat` is `heartbeat`, command
//! `MTMount_command_moveToTarget` is `moveToTarget`. IDL `boolean` is
//! [`ValueKind::Bool`]; every integer type (`byte` … `unsigned long long`) is
//! `Int`; `float` and `double` are `Float`; `string` and `char` are `Str`. A
//! `Count` above 1 makes an array of that length, except for strings, whose
//! `Count` is a length: strings are always scalars.
//!
//! # 32-bit floats
//! proto has one `Float` kind, carried as f64, for `float` and `double`
//! alike; the interface keeps which fields are 32-bit `float`
//! ([`Float32Fields`]), and [`Interface::narrow`] rounds their values to f32
//! as they are published. A simulated `float` then carries what the
//! observatory's would, and proto's MessagePack encoder writes it in 4 bytes
//! (a `double` keeps 8).
//!
//! # The compact format
//! Line-based; `#` starts a comment; blank lines are ignored. A line that
//! does not start with whitespace opens a topic or command, an indented line
//! adds a field (a parameter, for a command) to the last one opened:
//!
//! ```text
//! # comment
//! telemetry forceActuatorData 50      # name, nominal rate in Hz
//!   zForce    float[156] N            # name, kind[count], units (rest of the line)
//!   timestamp double     s
//! event heartbeat
//!   heartbeat bool                    # no units: unitless
//! command moveToTarget
//!   azimuth   float deg
//! ```
//!
//! Kinds are `bool`, `float` (32-bit), `double`, `string` and the site's
//! integer types, a space written `_`: `byte` (0 to 255), `short`, `int` and
//! `long` (both 32-bit, as SAL's `long` is), `long_long`, `unsigned_short`,
//! `unsigned_int`. A command keeps each parameter's type
//! ([`CommandSchema::types`]) and a value outside its range is refused
//! before it is sent; `[n]` (n ≥ 2) makes an
//! array of `n`; strings cannot be arrays. Names are identifiers (letters,
//! digits, `_`). A topic may have no fields. Errors name the line.

use crate::idl::IdlType;
use meridian_proto::{Category, FieldSchema, Fields, TopicSchema, Value, ValueKind};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::PathBuf;
use std::sync::OnceLock;

/// What one CSC publishes and accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct Interface {
    pub csc: String,
    /// Category `Telemetry`, `rate_hz` the nominal rate.
    pub telemetry: Vec<TopicSchema>,
    /// Category `Event`, `rate_hz` `None`; the generic events included.
    pub events: Vec<TopicSchema>,
    /// The generic commands included.
    pub commands: Vec<CommandSchema>,
    /// Which `Float` fields and parameters are 32-bit `float` at the site (the others are `double`).
    pub float32: Float32Fields,
}

/// Which part of an interface a topic or command is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Telemetry,
    Event,
    Command,
}

/// The fields (parameters, for a command) the site types 32-bit `float`,
/// by part and topic: proto's [`ValueKind::Float`] does not tell them from
/// `double`, so the interface keeps it (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Float32Fields {
    telemetry: BTreeMap<String, BTreeSet<String>>,
    events: BTreeMap<String, BTreeSet<String>>,
    commands: BTreeMap<String, BTreeSet<String>>,
}

impl Float32Fields {
    fn part(&self, part: Part) -> &BTreeMap<String, BTreeSet<String>> {
        match part {
            Part::Telemetry => &self.telemetry,
            Part::Event => &self.events,
            Part::Command => &self.commands,
        }
    }

    /// Marks `field` of `topic` (a command's parameter, for [`Part::Command`]) as 32-bit.
    pub fn insert(&mut self, part: Part, topic: &str, field: &str) {
        let map = match part {
            Part::Telemetry => &mut self.telemetry,
            Part::Event => &mut self.events,
            Part::Command => &mut self.commands,
        };
        map.entry(topic.to_string())
            .or_default()
            .insert(field.to_string());
    }

    /// The 32-bit fields of `topic`, if it has any.
    pub fn of(&self, part: Part, topic: &str) -> Option<&BTreeSet<String>> {
        self.part(part).get(topic)
    }

    /// Whether `field` of `topic` is 32-bit.
    pub fn contains(&self, part: Part, topic: &str, field: &str) -> bool {
        self.of(part, topic).is_some_and(|f| f.contains(field))
    }

    /// Takes `topic`'s marks from `other` (a generic topic merged in).
    fn copy_topic(&mut self, other: &Float32Fields, part: Part, topic: &str) {
        for field in other.of(part, topic).into_iter().flatten() {
            self.insert(part, topic, field);
        }
    }
}

/// A command and its parameters (every one required, see [`Interface::check_params`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CommandSchema {
    pub name: String,
    pub params: Vec<FieldSchema>,
    /// Each parameter's type as the site declares it, by name: the range a
    /// value must be in (a `byte` is 0 to 255). A parameter not here is
    /// checked as the widest type of its kind ([`IdlType::widest`]).
    pub types: BTreeMap<String, IdlType>,
}

/// Why an interface could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum InterfaceError {
    /// A file or folder could not be read: check the path given with `--interfaces`.
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// An XML file is not a valid interface definition; `reason` names the
    /// line and what is wrong or missing. Fix or replace the file.
    #[error("{}: {reason}", path.display())]
    Xml { path: PathBuf, reason: String },
    /// A compact definition is invalid at `line` (1-based). For a builtin
    /// one this is a bug caught by the tests.
    #[error("interface of {csc}, line {line}: {reason}")]
    Compact {
        csc: String,
        line: usize,
        reason: String,
    },
    /// `dir` has no folder for `csc`: the name is misspelt, or the CSC is not
    /// one the site defines.
    #[error("no interface definition of {csc} in {}", dir.display())]
    NoDefinition { csc: String, dir: PathBuf },
}

/// Why a command's parameters were refused; each names the command and, but
/// for an unknown command, the parameter. Answer the sender with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// The CSC has no such command.
    #[error("{csc} has no command {command}")]
    UnknownCommand { csc: String, command: String },
    /// A parameter of the command was not given (every parameter is required).
    #[error("{command}.{param}: missing")]
    Missing { command: String, param: String },
    /// A parameter has the wrong kind, or is an array of the wrong length.
    #[error("{command}.{param}: expected {expected}, got {found}")]
    WrongType {
        command: String,
        param: String,
        expected: String,
        found: String,
    },
    /// A parameter the command does not have (a misspelling, usually).
    #[error("{command}.{param}: not a parameter of {command}")]
    Unknown { command: String, param: String },
}

/// The builtin definitions, by CSC name; `builtin_cscs` lists the same names.
const BUILTIN: &[(&str, &str)] = &[
    ("ATDome", include_str!("../interfaces/ATDome.txt")),
    ("MTM1M3", include_str!("../interfaces/MTM1M3.txt")),
    ("MTMount", include_str!("../interfaces/MTMount.txt")),
    ("Script", include_str!("../interfaces/Script.txt")),
    ("ScriptQueue", include_str!("../interfaces/ScriptQueue.txt")),
    ("Test", include_str!("../interfaces/Test.txt")),
];

const BUILTIN_CSCS: &[&str] = &["ATDome", "MTM1M3", "MTMount", "Script", "ScriptQueue", "Test"];

/// The generic events and commands, merged into every builtin interface.
const GENERICS: &str = include_str!("../interfaces/generics.txt");

/// Every builtin interface, parsed once (a ScriptQueue asks for `Script`'s
/// on every run).
fn builtins() -> &'static HashMap<&'static str, Interface> {
    static BUILTINS: OnceLock<HashMap<&'static str, Interface>> = OnceLock::new();
    BUILTINS.get_or_init(|| {
        // The files are compiled in and parsed by the tests: an error is a
        // bug in this crate, not bad input, so it may stop the process.
        let generics = Interface::parse_compact("generics", GENERICS)
            .unwrap_or_else(|e| panic!("sim/interfaces/generics.txt: {e}"));
        BUILTIN
            .iter()
            .map(|&(csc, text)| {
                let mut interface = Interface::parse_compact(csc, text)
                    .unwrap_or_else(|e| panic!("sim/interfaces/{csc}.txt: {e}"));
                interface.merge_generics(&generics);
                (csc, interface)
            })
            .collect()
    })
}

/// The nominal rate of builtin telemetry topic `topic` of `csc`, if any.
pub(crate) fn builtin_rate(csc: &str, topic: &str) -> Option<f32> {
    builtins().get(csc)?.telemetry(topic)?.rate_hz
}

impl Interface {
    /// The project's own compact definition of a simulated CSC, generics
    /// merged in. `None` if the CSC is not simulated.
    pub fn builtin(csc: &str) -> Option<Interface> {
        builtins().get(csc).cloned()
    }

    /// Names of the CSCs with a builtin definition.
    pub fn builtin_cscs() -> &'static [&'static str] {
        BUILTIN_CSCS
    }

    /// Parses the compact format (see the module doc); generics are not
    /// merged. Errors name the line.
    pub fn parse_compact(csc: &str, text: &str) -> Result<Interface, InterfaceError> {
        let mut interface = Interface {
            csc: csc.to_string(),
            telemetry: Vec::new(),
            events: Vec::new(),
            commands: Vec::new(),
            float32: Float32Fields::default(),
        };
        // What indented lines add fields to.
        let mut open = Open::Nothing;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let err = |reason: String| InterfaceError::Compact {
                csc: csc.to_string(),
                line,
                reason,
            };
            let content = raw.split_once('#').map_or(raw, |(before, _)| before);
            if content.trim().is_empty() {
                continue;
            }
            if content.starts_with([' ', '\t']) {
                let (field, idl_type) = parse_field(content).map_err(err)?;
                let (part, owner, fields) = match open {
                    Open::Telemetry => interface
                        .telemetry
                        .last_mut()
                        .map(|t| (Part::Telemetry, &t.name, &mut t.fields)),
                    Open::Event => interface
                        .events
                        .last_mut()
                        .map(|t| (Part::Event, &t.name, &mut t.fields)),
                    Open::Command => interface
                        .commands
                        .last_mut()
                        .map(|c| (Part::Command, &c.name, &mut c.params)),
                    Open::Nothing => None,
                }
                .ok_or_else(|| {
                    err(format!(
                        "field {} comes before any `telemetry`, `event` or `command` line \
                         (only fields are indented)",
                        field.name
                    ))
                })?;
                if fields.iter().any(|f| f.name == field.name) {
                    return Err(err(format!("{owner} has field {} twice", field.name)));
                }
                if idl_type == IdlType::Float {
                    interface.float32.insert(part, owner, &field.name);
                }
                let field_name = field.name.clone();
                fields.push(field);
                if part == Part::Command {
                    if let Some(command) = interface.commands.last_mut() {
                        command.types.insert(field_name, idl_type);
                    }
                }
                continue;
            }
            let words: Vec<&str> = content.split_whitespace().collect();
            let Some((&keyword, rest)) = words.split_first() else {
                continue;
            };
            let taken = |name: &str| match keyword {
                "telemetry" => Ok(interface.telemetry.iter().any(|t| t.name == name)),
                "event" => Ok(interface.events.iter().any(|t| t.name == name)),
                "command" => Ok(interface.commands.iter().any(|c| c.name == name)),
                other => Err(err(format!(
                    "`{other}`: expected `telemetry`, `event` or `command` (fields are indented)"
                ))),
            };
            let Some((&name, rest)) = rest.split_first() else {
                taken("")?;
                return Err(err(format!("`{keyword}` needs a name")));
            };
            check_name(name).map_err(err)?;
            let taken = taken(name)?;
            if taken {
                return Err(err(format!("{keyword} {name} is defined twice")));
            }
            match (keyword, rest) {
                ("telemetry", [rate]) => {
                    let rate_hz = match rate.parse::<f32>() {
                        Ok(r) if r.is_finite() && r > 0.0 => r,
                        _ => {
                            return Err(err(format!(
                                "bad rate `{rate}`: expected a positive number of Hz"
                            )))
                        }
                    };
                    interface.telemetry.push(TopicSchema {
                        name: name.to_string(),
                        category: Category::Telemetry,
                        rate_hz: Some(rate_hz),
                        fields: Vec::new(),
                    });
                    open = Open::Telemetry;
                }
                ("telemetry", []) => {
                    return Err(err(format!("telemetry {name} needs its nominal rate in Hz")));
                }
                ("event", []) => {
                    interface.events.push(TopicSchema {
                        name: name.to_string(),
                        category: Category::Event,
                        rate_hz: None,
                        fields: Vec::new(),
                    });
                    open = Open::Event;
                }
                ("command", []) => {
                    interface.commands.push(CommandSchema {
                        name: name.to_string(),
                        params: Vec::new(),
                        types: BTreeMap::new(),
                    });
                    open = Open::Command;
                }
                (_, extra) => {
                    return Err(err(format!(
                        "unexpected `{}` after {keyword} {name}",
                        extra.join(" ")
                    )));
                }
            }
        }
        Ok(interface)
    }

    pub fn telemetry(&self, name: &str) -> Option<&TopicSchema> {
        self.telemetry.iter().find(|t| t.name == name)
    }

    pub fn event(&self, name: &str) -> Option<&TopicSchema> {
        self.events.iter().find(|t| t.name == name)
    }

    pub fn command(&self, name: &str) -> Option<&CommandSchema> {
        self.commands.iter().find(|c| c.name == name)
    }

    /// Every topic, telemetry then events: what a producer declares in its handshake.
    pub fn topics(&self) -> Vec<TopicSchema> {
        self.telemetry.iter().chain(&self.events).cloned().collect()
    }

    /// Checks `params` of `command` against the schema before the command
    /// reaches a CSC, so a bad request is refused with a reason naming the
    /// parameter instead of failing inside the simulator. Every number and
    /// flag is required (strings may be left out); an int is accepted for a float (JSON does not tell `1` from
    /// `1.0`), an array must have the schema's length. Unknown parameters are
    /// reported first: a misspelt name is likelier than a forgotten one.
    pub fn check_params(&self, command: &str, params: &Fields) -> Result<(), ParamError> {
        let schema = self.command(command).ok_or_else(|| ParamError::UnknownCommand {
            csc: self.csc.clone(),
            command: command.to_string(),
        })?;
        for (name, value) in params {
            let Some(field) = schema.params.iter().find(|p| p.name == *name) else {
                return Err(ParamError::Unknown {
                    command: command.to_string(),
                    param: name.clone(),
                });
            };
            if !accepts(field, value) {
                let (kind, len) = value.kind();
                return Err(ParamError::WrongType {
                    command: command.to_string(),
                    param: name.clone(),
                    expected: describe(field.kind, field.count.map(|n| n as usize)),
                    found: describe(kind, len),
                });
            }
        }
        // A missing string means "the default" in the observatory's commands
        // (`start`'s configurationOverride, `setLogLevel`'s subsystem), so it
        // may be left out; a missing number or flag is refused, because its
        // zero would be a real value (moving to elevation 0).
        if let Some(missing) = schema
            .params
            .iter()
            .filter(|p| p.kind != ValueKind::Str)
            .find(|p| !params.iter().any(|(name, _)| *name == p.name))
        {
            return Err(ParamError::Missing {
                command: command.to_string(),
                param: missing.name.clone(),
            });
        }
        Ok(())
    }

    /// Rounds the values of `topic`'s 32-bit `float` fields to f32 (the
    /// site's precision), before they are published; every other field,
    /// `double` ones included, is left as it is.
    pub fn narrow(&self, part: Part, topic: &str, fields: &mut Fields) {
        let Some(float32) = self.float32.of(part, topic) else {
            return;
        };
        for (name, value) in fields.iter_mut() {
            if float32.contains(name.as_str()) {
                to_f32(value);
            }
        }
    }

    /// Adds the generic events and commands (those of `generics`) this
    /// interface does not define itself, with their 32-bit marks.
    pub(crate) fn merge_generics(&mut self, generics: &Interface) {
        for event in &generics.events {
            if self.event(&event.name).is_none() {
                self.events.push(event.clone());
                self.float32
                    .copy_topic(&generics.float32, Part::Event, &event.name);
            }
        }
        for command in &generics.commands {
            if self.command(&command.name).is_none() {
                self.commands.push(command.clone());
                self.float32
                    .copy_topic(&generics.float32, Part::Command, &command.name);
            }
        }
    }
}

/// A float value, or each of a float array's, rounded to the nearest f32.
fn to_f32(value: &mut Value) {
    let round = |x: f64| x as f32 as f64;
    match value {
        Value::Float(x) => *x = round(*x),
        Value::Floats(xs) => xs.iter_mut().for_each(|x| *x = round(*x)),
        _ => {}
    }
}

/// What the indented lines of a compact definition belong to: the last
/// topic or command opened.
#[derive(Clone, Copy)]
enum Open {
    Nothing,
    Telemetry,
    Event,
    Command,
}

/// Whether `value` fits `field`: same kind (an int for a float too), and an
/// array of exactly `count` elements for an array field.
fn accepts(field: &FieldSchema, value: &Value) -> bool {
    let (kind, len) = value.kind();
    let kind_ok = kind == field.kind || (field.kind == ValueKind::Float && kind == ValueKind::Int);
    kind_ok && len == field.count.map(|n| n as usize)
}

/// "a float", "an array of 5 ints": how errors name a kind.
fn describe(kind: ValueKind, len: Option<usize>) -> String {
    let (one, many) = match kind {
        ValueKind::Bool => ("a bool", "bools"),
        ValueKind::Int => ("an int", "ints"),
        ValueKind::Float => ("a float", "floats"),
        ValueKind::Str => ("a string", "strings"),
    };
    match len {
        None => one.to_string(),
        Some(n) => format!("an array of {n} {many}"),
    }
}

/// Names are identifiers, as the site's are.
fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a name (letters, digits and `_`, not starting with a digit)"
        ))
    }
}

/// The first word of `s` and what follows it.
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(end) => (&s[..end], &s[end..]),
        None => (s, ""),
    }
}

/// A field line: `name kind[count] units…`, and whether it is a 32-bit `float`.
fn parse_field(line: &str) -> Result<(FieldSchema, IdlType), String> {
    let (name, rest) = split_word(line);
    check_name(name)?;
    let (kind_word, units) = split_word(rest);
    if kind_word.is_empty() {
        return Err(format!(
            "field {name} has no kind: expected `{name} <kind>[<count>] <units>`"
        ));
    }
    let (kind_name, count) = match kind_word.split_once('[') {
        None => (kind_word, None),
        Some((kind_name, count)) => {
            let count = count
                .strip_suffix(']')
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|n| *n >= 2);
            match count {
                Some(n) => (kind_name, Some(n)),
                None => {
                    return Err(format!(
                        "field {name}: bad count in `{kind_word}`: expected `{kind_name}[n]` with n ≥ 2 \
                         (a scalar has no count)"
                    ))
                }
            }
        }
    };
    let idl_type = match kind_name {
        "bool" => IdlType::Boolean,
        "string" => IdlType::String,
        // The site's own words, a space written `_`.
        other => IdlType::parse(&other.replace('_', " "))
            .filter(|t| !matches!(t, IdlType::Boolean | IdlType::String))
            .ok_or_else(|| {
                format!(
                    "field {name}: unknown kind `{other}`: expected bool, byte, short, int, long, long_long, \
                     unsigned_short, unsigned_int, float, double or string"
                )
            })?,
    };
    let kind = idl_type.kind();
    if kind == ValueKind::Str && count.is_some() {
        return Err(format!("field {name}: strings cannot be arrays"));
    }
    let units = units.trim();
    let field = FieldSchema {
        name: name.to_string(),
        kind,
        count,
        units: if units.is_empty() { "unitless" } else { units }.to_string(),
    };
    Ok((field, idl_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line and reason of a compact error.
    fn compact_error(text: &str) -> (usize, String) {
        match Interface::parse_compact("X", text) {
            Err(InterfaceError::Compact { csc, line, reason }) => {
                assert_eq!(csc, "X");
                (line, reason)
            }
            other => panic!("expected a Compact error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_documented_example() {
        let text = "# comment\n\
                    telemetry forceActuatorData 50      # name, rate\n\
                    \x20 zForce    float[156] N   # comment\n\
                    \x20 timestamp float      s\n\
                    \n\
                    event heartbeat\n\
                    \t heartbeat bool\n\
                    command moveToTarget\n\
                    \x20 azimuth   float deg\n\
                    \x20 torque    float N m\n\
                    command stop\n";
        let i = Interface::parse_compact("X", text).expect("valid");
        let t = i.telemetry("forceActuatorData").expect("telemetry");
        assert_eq!((t.category, t.rate_hz), (Category::Telemetry, Some(50.0)));
        assert_eq!(
            t.fields[0],
            FieldSchema {
                name: "zForce".into(),
                kind: ValueKind::Float,
                count: Some(156),
                units: "N".into()
            }
        );
        assert_eq!(t.fields[1].units, "s");
        let e = i.event("heartbeat").expect("event");
        assert_eq!(
            (e.category, e.rate_hz, e.fields[0].units.as_str()),
            (Category::Event, None, "unitless")
        );
        let c = i.command("moveToTarget").expect("command");
        assert_eq!(c.params.len(), 2);
        assert_eq!(c.params[1].units, "N m");
        assert!(i.command("stop").expect("command").params.is_empty());
        let names: Vec<String> = i.topics().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["forceActuatorData", "heartbeat"]);
    }

    #[test]
    fn compact_errors_name_the_line() {
        let (line, reason) = compact_error("event a\n  x quad unitless\n");
        assert_eq!(line, 2);
        assert!(reason.contains("unknown kind `quad`"), "{reason}");
        let (line, reason) = compact_error("# fields first\n  x int\n");
        assert_eq!(line, 2);
        assert!(reason.contains("before any `telemetry`"), "{reason}");
        for rate in ["fast", "0", "-5", "inf", "NaN"] {
            let (line, reason) = compact_error(&format!("event a\n\ntelemetry b {rate}\n"));
            assert_eq!(line, 3, "{rate}");
            assert!(reason.contains(&format!("bad rate `{rate}`")), "{reason}");
        }
        let (line, reason) = compact_error("telemetry b\n");
        assert_eq!(line, 1);
        assert!(reason.contains("needs its nominal rate"), "{reason}");
        for count in [
            "float[]",
            "float[1]",
            "float[0]",
            "float[x]",
            "float[3",
            "float[-2]",
        ] {
            let (line, reason) = compact_error(&format!("command c\n  ok int\n  x {count} N\n"));
            assert_eq!(line, 3, "{count}");
            assert!(reason.contains("bad count"), "{reason}");
        }
        let (line, reason) = compact_error("event a\n  s string[20]\n");
        assert_eq!(line, 2);
        assert!(reason.contains("strings cannot be arrays"), "{reason}");
        let (line, reason) = compact_error("topic a\n");
        assert_eq!(line, 1);
        assert!(
            reason.contains("expected `telemetry`, `event` or `command`"),
            "{reason}"
        );
        let (line, reason) = compact_error("event a\n  x int\n  x float\n");
        assert_eq!(line, 3);
        assert!(reason.contains("twice"), "{reason}");
        let (line, reason) = compact_error("event a\nevent a\n");
        assert_eq!(line, 2);
        assert!(reason.contains("twice"), "{reason}");
        let (line, reason) = compact_error("event a extra\n");
        assert_eq!(line, 1);
        assert!(reason.contains("unexpected `extra`"), "{reason}");
        let (line, reason) = compact_error("event\n");
        assert_eq!(line, 1);
        assert!(reason.contains("`event` needs a name"), "{reason}");
        let (line, reason) = compact_error("\nfield\n");
        assert_eq!(line, 2);
        assert!(reason.contains("expected `telemetry`"), "{reason}");
        let (line, reason) = compact_error("event 9lives\n");
        assert_eq!(line, 1);
        assert!(reason.contains("not a name"), "{reason}");
        let (line, reason) = compact_error("event a\n  lonely\n");
        assert_eq!(line, 2);
        assert!(reason.contains("has no kind"), "{reason}");
    }

    #[test]
    fn compact_error_messages_say_where() {
        let e = Interface::parse_compact("MTMount", "telemetry a x\n").expect_err("bad rate");
        assert_eq!(
            e.to_string(),
            "interface of MTMount, line 1: bad rate `x`: expected a positive number of Hz"
        );
    }

    #[test]
    fn every_builtin_parses_with_the_generics() {
        let names: Vec<&str> = BUILTIN.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, Interface::builtin_cscs());
        let generics = Interface::parse_compact("generics", GENERICS).expect("generics.txt parses");
        assert!(
            generics.telemetry.is_empty(),
            "generics are events and commands only"
        );
        for csc in Interface::builtin_cscs() {
            let i = Interface::builtin(csc).expect("builtin");
            assert_eq!(i.csc, *csc);
            for event in &generics.events {
                assert!(i.event(&event.name).is_some(), "{csc} lacks {}", event.name);
            }
            for command in &generics.commands {
                assert!(i.command(&command.name).is_some(), "{csc} lacks {}", command.name);
            }
            assert!(i.telemetry.iter().all(|t| t.rate_hz.is_some_and(|r| r > 0.0)));
        }
        assert_eq!(Interface::builtin("NoSuchCsc"), None);
    }

    #[test]
    fn merging_keeps_a_cscs_own_topic() {
        let mut own =
            Interface::parse_compact("X", "event heartbeat\n  mine int\ncommand start\n").expect("valid");
        let generics = Interface::parse_compact(
            "g",
            "event heartbeat\n  heartbeat bool\nevent logLevel\ncommand start\n  a int\n",
        )
        .expect("valid");
        own.merge_generics(&generics);
        assert_eq!(own.events.len(), 2);
        assert_eq!(own.event("heartbeat").expect("own").fields[0].name, "mine");
        assert!(own.command("start").expect("own").params.is_empty());
    }

    fn mount() -> Interface {
        Interface::parse_compact(
            "MTMount",
            "command moveToTarget\n  azimuth float deg\n  elevation float deg\n\
             command setArrays\n  int0 int[5]\n  double0 float[5]\n  name string\n  flag bool\n",
        )
        .expect("valid")
    }

    fn fields(pairs: &[(&str, Value)]) -> Fields {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn params_that_fit_are_accepted() {
        let m = mount();
        let ok = fields(&[("azimuth", Value::Float(10.0)), ("elevation", Value::Int(45))]);
        assert_eq!(m.check_params("moveToTarget", &ok), Ok(()));
        let arrays = fields(&[
            ("int0", Value::Ints(vec![1, 2, 3, 4, 5])),
            ("double0", Value::Ints(vec![1, 2, 3, 4, 5])),
            ("name", Value::Str("x".into())),
            ("flag", Value::Bool(false)),
        ]);
        assert_eq!(m.check_params("setArrays", &arrays), Ok(()));
    }

    #[test]
    fn each_bad_param_is_named() {
        let m = mount();
        let check = |command: &str, pairs: &[(&str, Value)]| {
            m.check_params(command, &fields(pairs))
                .expect_err("refused")
                .to_string()
        };
        assert_eq!(
            check(
                "moveToTarget",
                &[
                    ("azimuth", Value::Str("north".into())),
                    ("elevation", Value::Float(1.0))
                ]
            ),
            "moveToTarget.azimuth: expected a float, got a string"
        );
        assert_eq!(
            check("moveToTarget", &[("azimuth", Value::Float(1.0))]),
            "moveToTarget.elevation: missing"
        );
        assert_eq!(
            check(
                "moveToTarget",
                &[
                    ("azimuth", Value::Float(1.0)),
                    ("elevation", Value::Float(1.0)),
                    ("speed", Value::Int(3))
                ]
            ),
            "moveToTarget.speed: not a parameter of moveToTarget"
        );
        let arrays = |int0: Value| {
            check(
                "setArrays",
                &[
                    ("int0", int0),
                    ("double0", Value::Floats(vec![0.0; 5])),
                    ("name", Value::Str(String::new())),
                    ("flag", Value::Bool(true)),
                ],
            )
        };
        assert_eq!(
            arrays(Value::Ints(vec![1, 2, 3])),
            "setArrays.int0: expected an array of 5 ints, got an array of 3 ints"
        );
        assert_eq!(
            arrays(Value::Int(1)),
            "setArrays.int0: expected an array of 5 ints, got an int"
        );
        assert_eq!(
            arrays(Value::Floats(vec![0.5; 5])),
            "setArrays.int0: expected an array of 5 ints, got an array of 5 floats"
        );
        assert_eq!(check("fly", &[]), "MTMount has no command fly");
        assert_eq!(
            m.check_params("fly", &Fields::new()),
            Err(ParamError::UnknownCommand {
                csc: "MTMount".into(),
                command: "fly".into()
            })
        );
    }
}
