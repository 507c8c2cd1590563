//! Reads the site's XML interface definitions (the `ts_xml` layout) into an
//! [`Interface`], so the simulator can speak for any CSC the observatory
//! defines, not only the builtin ones.
//!
//! Layout read: `<dir>/<CSC>/<CSC>_Telemetry.xml`, `_Events.xml` and
//! `_Commands.xml` (a missing file means the CSC has none of that kind; a
//! folder with none of them, like the header services', has only the
//! generics) and `<dir>/SALGenerics.xml`. Only facts are taken: topic and
//! field names, IDL types, counts and units; descriptions and enumerations
//! are ignored.
//!
//! The files come from outside the process: nothing here panics, and every
//! error is an [`InterfaceError::Xml`] naming the file, the line and what is
//! wrong or missing.

use crate::idl::IdlType;
use crate::interface::{CommandSchema, Float32Fields, Interface, InterfaceError, Part};
use meridian_proto::{Category, FieldSchema, TopicSchema, ValueKind};
use std::collections::BTreeMap;
use std::io;
use std::path::Path;

/// Nominal rate given to telemetry whose rate we do not know: the XML never
/// says, so only topics of a builtin interface have a better one.
pub const DEFAULT_RATE_HZ: f32 = 1.0;

/// Longest array accepted from a `Count`. The site's largest is 3024; the
/// bound keeps a broken file from making the simulator allocate gigabytes
/// per sample (and keeps a sample well under the frame limit).
pub const MAX_COUNT: u32 = 65_536;

/// `Category` values of `SALGenerics.xml` whose topics every loaded CSC gets:
/// "mandatory" (every component), "csc" (every CSC) and "configurable". The
/// uncategorised generics (`abort`, `enterControl`, `clockOffset`,
/// `largeFileObjectAvailable`, `statusCode`) are opt-in per CSC on the site;
/// we leave them out rather than read `SALSubsystems.xml`, which is also why
/// `Script` gets the CSC generics here although the site does not add them
/// to it. `sim/interfaces/generics.txt` makes the same choice.
pub const MERGED_GENERIC_CATEGORIES: &[&str] = &["mandatory", "csc", "configurable"];

/// Where each part of an interface is in the XML: a CSC's folder has one file per part.
impl Part {
    /// The element that defines one topic of this kind.
    pub fn element(self) -> &'static str {
        match self {
            Part::Telemetry => "SALTelemetry",
            Part::Event => "SALEvent",
            Part::Command => "SALCommand",
        }
    }

    /// What follows `<CSC>_` in an `EFDB_Topic` of this kind.
    pub fn infix(self) -> &'static str {
        match self {
            Part::Telemetry => "",
            Part::Event => "logevent_",
            Part::Command => "command_",
        }
    }

    /// The file of a CSC's folder holding topics of this kind.
    pub fn file_name(self, csc: &str) -> String {
        let suffix = match self {
            Part::Telemetry => "Telemetry",
            Part::Event => "Events",
            Part::Command => "Commands",
        };
        format!("{csc}_{suffix}.xml")
    }
}

/// One topic as the XML defines it, its name without prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct XmlTopic {
    /// E.g. `azimuth` for `MTMount_azimuth`, `heartbeat` for `SALGeneric_logevent_heartbeat`.
    pub name: String,
    /// `Category` of a generic topic (see [`MERGED_GENERIC_CATEGORIES`]); `None` if absent.
    pub category: Option<String>,
    pub fields: Vec<FieldSchema>,
    /// The fields typed `float` (32-bit); the other `Float` fields are `double`.
    pub float32: Vec<String>,
    /// Every field's `IDL_Type`, by name.
    pub types: BTreeMap<String, IdlType>,
}

/// The element kind of an IDL type, `None` if it is not one the site uses.
/// Every integer type becomes `Int` (i64 holds them all), both float types
/// `Float` (the interface keeps which are 32-bit, see [`Float32Fields`]).
pub fn idl_kind(idl_type: &str) -> Option<ValueKind> {
    IdlType::parse(idl_type).map(IdlType::kind)
}

impl Interface {
    /// Loads `<dir>/<csc>/<csc>_{Telemetry,Events,Commands}.xml` (a missing
    /// file means none of that kind) and merges the generics of
    /// `<dir>/SALGenerics.xml`. Telemetry gets the builtin interface's rate
    /// where it has the topic, else 1 Hz. Defined here so that
    /// [`crate::interface`] does not depend on the XML reader; see [`load`].
    pub fn from_xml_dir(dir: &Path, csc: &str) -> Result<Interface, InterfaceError> {
        load(dir, csc)
    }
}

/// Loads the interface of `csc` from the `ts_xml` folder `dir`, the generics
/// of [`MERGED_GENERIC_CATEGORIES`] merged in (a CSC's own topic of the same
/// name wins). Telemetry rates come from the builtin interface where it has
/// the topic, else [`DEFAULT_RATE_HZ`].
pub fn load(dir: &Path, csc: &str) -> Result<Interface, InterfaceError> {
    if !dir.is_dir() {
        return Err(InterfaceError::Io {
            path: dir.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::NotFound,
                "not a directory of XML interface definitions",
            ),
        });
    }
    // A name with a path separator or `..` must not reach outside `dir`.
    let plain_name = !csc.is_empty() && csc.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let folder = dir.join(csc);
    if !plain_name || !folder.is_dir() {
        return Err(InterfaceError::NoDefinition {
            csc: csc.to_string(),
            dir: dir.to_path_buf(),
        });
    }
    let rate = |topic: &str| crate::interface::builtin_rate(csc, topic).unwrap_or(DEFAULT_RATE_HZ);
    let mut float32 = Float32Fields::default();
    let telemetry = read_file(&folder, csc, Part::Telemetry)?
        .into_iter()
        .map(|t| mark_float32(&mut float32, Part::Telemetry, t))
        .map(|t| TopicSchema {
            rate_hz: Some(rate(&t.name)),
            name: t.name,
            category: Category::Telemetry,
            fields: t.fields,
        })
        .collect();
    let events = read_file(&folder, csc, Part::Event)?
        .into_iter()
        .map(|t| event_schema(mark_float32(&mut float32, Part::Event, t)))
        .collect();
    let commands = read_file(&folder, csc, Part::Command)?
        .into_iter()
        .map(|t| command_schema(mark_float32(&mut float32, Part::Command, t)))
        .collect();
    let mut interface = Interface {
        csc: csc.to_string(),
        telemetry,
        events,
        commands,
        float32,
    };
    interface.merge_generics(&generics(dir)?);
    Ok(interface)
}

/// Records `topic`'s 32-bit fields in `float32`, and hands the topic on.
fn mark_float32(float32: &mut Float32Fields, part: Part, topic: XmlTopic) -> XmlTopic {
    for field in &topic.float32 {
        float32.insert(part, &topic.name, field);
    }
    topic
}

/// The generic events and commands of `<dir>/SALGenerics.xml` that every CSC
/// gets (see [`MERGED_GENERIC_CATEGORIES`]).
pub fn read_generics(dir: &Path) -> Result<(Vec<TopicSchema>, Vec<CommandSchema>), InterfaceError> {
    let generics = generics(dir)?;
    Ok((generics.events, generics.commands))
}

/// The same generics as an interface named `generics`, which keeps which of
/// their fields are 32-bit (see [`read_generics`]).
pub fn generics(dir: &Path) -> Result<Interface, InterfaceError> {
    let path = dir.join("SALGenerics.xml");
    let text = read_text(&path)?;
    let merged = |t: &XmlTopic| {
        t.category
            .as_deref()
            .is_some_and(|c| MERGED_GENERIC_CATEGORIES.contains(&c))
    };
    let mut float32 = Float32Fields::default();
    let events = parse_topics(&path, &text, "SALGeneric", Part::Event)?
        .into_iter()
        .filter(merged)
        .map(|t| event_schema(mark_float32(&mut float32, Part::Event, t)))
        .collect();
    let commands = parse_topics(&path, &text, "SALGeneric", Part::Command)?
        .into_iter()
        .filter(merged)
        .map(|t| command_schema(mark_float32(&mut float32, Part::Command, t)))
        .collect();
    Ok(Interface {
        csc: "generics".to_string(),
        telemetry: Vec::new(),
        events,
        commands,
        float32,
    })
}

fn event_schema(t: XmlTopic) -> TopicSchema {
    TopicSchema {
        name: t.name,
        category: Category::Event,
        rate_hz: None,
        fields: t.fields,
    }
}

fn command_schema(t: XmlTopic) -> CommandSchema {
    CommandSchema {
        name: t.name,
        params: t.fields,
        types: t.types,
    }
}

/// The topics of one kind of a CSC's folder; none if its file does not exist.
fn read_file(folder: &Path, csc: &str, kind: Part) -> Result<Vec<XmlTopic>, InterfaceError> {
    let path = folder.join(kind.file_name(csc));
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_topics(&path, &text, csc, kind),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(InterfaceError::Io { path, source }),
    }
}

fn read_text(path: &Path) -> Result<String, InterfaceError> {
    std::fs::read_to_string(path).map_err(|source| InterfaceError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses the topics of `kind` in `text` (the contents of `path`, named in
/// errors), whose `EFDB_Topic`s must start with `<subsystem>_<infix>`.
///
/// The root must be `<SALTelemetrySet>`, `<SALEventSet>`, `<SALCommandSet>`
/// (the one matching `kind`) or `<SALObjects>` (as in `SALGenerics.xml`).
pub fn parse_topics(
    path: &Path,
    text: &str,
    subsystem: &str,
    kind: Part,
) -> Result<Vec<XmlTopic>, InterfaceError> {
    let err = |reason: String| InterfaceError::Xml {
        path: path.to_path_buf(),
        reason,
    };
    let doc = roxmltree::Document::parse(text).map_err(|e| err(format!("not well-formed XML: {e}")))?;
    let line = |node: roxmltree::Node| doc.text_pos_at(node.range().start).row;
    let root = doc.root_element();
    let set = format!("{}Set", kind.element());
    let root_name = root.tag_name().name();
    if root_name != set && root_name != "SALObjects" {
        return Err(err(format!(
            "the root element is <{root_name}>, expected <{set}>"
        )));
    }
    let prefix = format!("{subsystem}_{}", kind.infix());
    let mut topics: Vec<XmlTopic> = Vec::new();
    for node in root.descendants().filter(|n| n.has_tag_name(kind.element())) {
        let at = line(node);
        let full = child_text(node, "EFDB_Topic")
            .ok_or_else(|| err(format!("line {at}: <{}> has no <EFDB_Topic>", kind.element())))?;
        let name = match full.strip_prefix(&prefix) {
            Some(name) if !name.is_empty() => name,
            _ => {
                return Err(err(format!(
                    "line {at}: topic {full} does not start with {prefix}<name>"
                )))
            }
        };
        if topics.iter().any(|t| t.name == name) {
            return Err(err(format!("line {at}: topic {full} is defined twice")));
        }
        let mut fields: Vec<FieldSchema> = Vec::new();
        let mut float32 = Vec::new();
        let mut types = BTreeMap::new();
        for item in node.children().filter(|n| n.has_tag_name("item")) {
            let (field, idl_type) =
                parse_item(item).map_err(|reason| err(format!("line {}: {full}: {reason}", line(item))))?;
            if fields.iter().any(|f| f.name == field.name) {
                return Err(err(format!(
                    "line {}: {full}: item {} is defined twice",
                    line(item),
                    field.name
                )));
            }
            if idl_type == IdlType::Float {
                float32.push(field.name.clone());
            }
            types.insert(field.name.clone(), idl_type);
            fields.push(field);
        }
        let category = child_text(node, "Category").map(str::to_string);
        topics.push(XmlTopic {
            name: name.to_string(),
            category,
            fields,
            float32,
            types,
        });
    }
    Ok(topics)
}

/// One `<item>`: `EFDB_Name` and `IDL_Type` are required; `Count` defaults
/// to 1 (a scalar) and `Units` to `unitless`. A string's `Count` is its
/// length, not an array: strings are always scalars. Also the item's type.
fn parse_item(item: roxmltree::Node) -> Result<(FieldSchema, IdlType), String> {
    let name = child_text(item, "EFDB_Name").ok_or("an <item> has no <EFDB_Name>")?;
    let idl_type = child_text(item, "IDL_Type").ok_or_else(|| format!("item {name} has no <IDL_Type>"))?;
    let idl =
        IdlType::parse(idl_type).ok_or_else(|| format!("item {name}: unknown <IDL_Type> {idl_type:?}"))?;
    let kind = idl.kind();
    let count = match child_text(item, "Count") {
        None => 1,
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=MAX_COUNT).contains(&n) => n,
            _ => {
                return Err(format!(
                    "item {name}: <Count> {text:?} is not a whole number in 1..={MAX_COUNT}"
                ))
            }
        },
    };
    let units = child_text(item, "Units").unwrap_or("unitless");
    let field = FieldSchema {
        name: name.to_string(),
        kind,
        count: (count > 1 && kind != ValueKind::Str).then_some(count),
        units: units.to_string(),
    };
    Ok((field, idl))
}

/// The trimmed text of the first child element `name`, `None` if absent or empty.
fn child_text<'a>(node: roxmltree::Node<'a, '_>, name: &str) -> Option<&'a str> {
    node.children()
        .find(|n| n.has_tag_name(name))
        .and_then(|n| n.text())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, kind: Part) -> Result<Vec<XmlTopic>, InterfaceError> {
        parse_topics(Path::new("X/X_Events.xml"), text, "X", kind)
    }

    fn reason(result: Result<Vec<XmlTopic>, InterfaceError>) -> String {
        match result {
            Err(InterfaceError::Xml { path, reason }) => {
                assert_eq!(path, Path::new("X/X_Events.xml"));
                reason
            }
            other => panic!("expected an Xml error, got {other:?}"),
        }
    }

    const EVENTS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<SALEventSet>
  <SALEvent>
    <Subsystem>X</Subsystem>
    <EFDB_Topic>X_logevent_moved</EFDB_Topic>
    <Description>ignored</Description>
    <item><EFDB_Name>flag</EFDB_Name><IDL_Type>boolean</IDL_Type><Units>unitless</Units><Count>1</Count></item>
    <item><EFDB_Name>steps</EFDB_Name><IDL_Type>unsigned  long long</IDL_Type><Count>6</Count></item>
    <item><EFDB_Name>where</EFDB_Name><IDL_Type>double</IDL_Type><Units>N m</Units><Count>3</Count></item>
    <item><EFDB_Name>label</EFDB_Name><IDL_Type>string</IDL_Type><Units>unitless</Units><Count>20</Count></item>
  </SALEvent>
  <SALEvent><EFDB_Topic>X_logevent_empty</EFDB_Topic></SALEvent>
</SALEventSet>"#;

    #[test]
    fn reads_names_kinds_counts_and_units() {
        let topics = parse(EVENTS, Part::Event).expect("valid");
        assert_eq!(topics.len(), 2);
        assert_eq!(topics[0].name, "moved");
        let f = &topics[0].fields;
        assert_eq!(
            (f[0].name.as_str(), f[0].kind, f[0].count),
            ("flag", ValueKind::Bool, None)
        );
        assert_eq!(
            (f[1].kind, f[1].count, f[1].units.as_str()),
            (ValueKind::Int, Some(6), "unitless")
        );
        assert_eq!(
            (f[2].kind, f[2].count, f[2].units.as_str()),
            (ValueKind::Float, Some(3), "N m")
        );
        assert_eq!(
            (f[3].kind, f[3].count),
            (ValueKind::Str, None),
            "a string's Count is its length"
        );
        assert_eq!(topics[1].name, "empty");
        assert!(topics[1].fields.is_empty());
    }

    #[test]
    fn every_idl_type_of_the_site_has_a_kind() {
        for t in [
            "boolean",
            "byte",
            "octet",
            "short",
            "int",
            "long",
            "long long",
            "unsigned short",
        ] {
            assert!(idl_kind(t).is_some(), "{t}");
        }
        for t in [
            "unsigned int",
            "unsigned long",
            "unsigned long long",
            "float",
            "double",
            "string",
            "char",
        ] {
            assert!(idl_kind(t).is_some(), "{t}");
        }
        assert_eq!(idl_kind("quad"), None);
    }

    #[test]
    fn garbage_is_an_error_naming_the_file() {
        assert!(reason(parse("<SALEventSet><SALEvent>", Part::Event)).starts_with("not well-formed XML"));
        assert!(reason(parse("", Part::Event)).starts_with("not well-formed XML"));
        let r = reason(parse("<html/>", Part::Event));
        assert!(r.contains("<html>") && r.contains("<SALEventSet>"), "{r}");
    }

    #[test]
    fn missing_or_wrong_elements_are_named_with_their_line() {
        let r = reason(parse(
            "<SALEventSet>\n<SALEvent><Subsystem>X</Subsystem></SALEvent>\n</SALEventSet>",
            Part::Event,
        ));
        assert_eq!(r, "line 2: <SALEvent> has no <EFDB_Topic>");
        let r = reason(parse(
            "<SALEventSet><SALEvent><EFDB_Topic>Y_logevent_a</EFDB_Topic></SALEvent></SALEventSet>",
            Part::Event,
        ));
        assert!(r.contains("Y_logevent_a does not start with X_logevent_"), "{r}");
        let item = |body: &str| {
            format!("<SALEventSet><SALEvent><EFDB_Topic>X_logevent_a</EFDB_Topic>\n<item>{body}</item></SALEvent></SALEventSet>")
        };
        let r = reason(parse(&item("<IDL_Type>int</IDL_Type>"), Part::Event));
        assert_eq!(r, "line 2: X_logevent_a: an <item> has no <EFDB_Name>");
        let r = reason(parse(&item("<EFDB_Name>v</EFDB_Name>"), Part::Event));
        assert_eq!(r, "line 2: X_logevent_a: item v has no <IDL_Type>");
        let r = reason(parse(
            &item("<EFDB_Name>v</EFDB_Name><IDL_Type>quad</IDL_Type>"),
            Part::Event,
        ));
        assert!(r.contains("item v: unknown <IDL_Type> \"quad\""), "{r}");
        for count in ["0", "-1", "many", "99999999999"] {
            let body = format!("<EFDB_Name>v</EFDB_Name><IDL_Type>int</IDL_Type><Count>{count}</Count>");
            let r = reason(parse(&item(&body), Part::Event));
            assert!(r.contains("item v: <Count>"), "{r}");
        }
    }

    #[test]
    fn duplicates_are_errors() {
        let twice = "<SALEventSet><SALEvent><EFDB_Topic>X_logevent_a</EFDB_Topic></SALEvent>\
                     <SALEvent><EFDB_Topic>X_logevent_a</EFDB_Topic></SALEvent></SALEventSet>";
        assert!(reason(parse(twice, Part::Event)).contains("defined twice"));
    }

    #[test]
    fn only_topics_of_the_asked_kind_are_read() {
        let text = "<SALObjects><SALCommandSet><SALCommand><EFDB_Topic>X_command_go</EFDB_Topic>\
                    <Category>csc</Category></SALCommand></SALCommandSet><SALEventSet><SALEvent>\
                    <EFDB_Topic>X_logevent_went</EFDB_Topic></SALEvent></SALEventSet></SALObjects>";
        let commands = parse(text, Part::Command).expect("valid");
        assert_eq!(commands.len(), 1);
        assert_eq!(
            (commands[0].name.as_str(), commands[0].category.as_deref()),
            ("go", Some("csc"))
        );
        let events = parse(text, Part::Event).expect("valid");
        assert_eq!(
            (events[0].name.as_str(), events[0].category.as_deref()),
            ("went", None)
        );
    }

    #[test]
    fn an_unknown_folder_is_no_definition() {
        let dir = std::env::temp_dir();
        for csc in ["NoSuchCsc", "../etc", ""] {
            match load(&dir, csc) {
                Err(InterfaceError::NoDefinition { csc: c, .. }) => assert_eq!(c, csc),
                other => panic!("{csc}: expected NoDefinition, got {other:?}"),
            }
        }
        match load(Path::new("/no/such/dir"), "Test") {
            Err(InterfaceError::Io { path, .. }) => assert_eq!(path, Path::new("/no/such/dir")),
            other => panic!("expected Io, got {other:?}"),
        }
    }

    #[test]
    fn load_merges_the_categorised_generics_under_the_cscs_own_topics() {
        let dir = std::env::temp_dir().join(format!("meridian-xml-test-{}", std::process::id()));
        let folder = dir.join("Dummy");
        std::fs::create_dir_all(&folder).expect("temp dir");
        let generics = "<SALObjects><SALEventSet>\
            <SALEvent><EFDB_Topic>SALGeneric_logevent_heartbeat</EFDB_Topic><Category>mandatory</Category>\
            <item><EFDB_Name>heartbeat</EFDB_Name><IDL_Type>boolean</IDL_Type></item></SALEvent>\
            <SALEvent><EFDB_Topic>SALGeneric_logevent_summaryState</EFDB_Topic><Category>csc</Category></SALEvent>\
            <SALEvent><EFDB_Topic>SALGeneric_logevent_statusCode</EFDB_Topic></SALEvent>\
            </SALEventSet><SALCommandSet><SALCommand><EFDB_Topic>SALGeneric_command_start</EFDB_Topic>\
            <Category>csc</Category></SALCommand></SALCommandSet></SALObjects>";
        std::fs::write(dir.join("SALGenerics.xml"), generics).expect("write");
        let only_generics = load(&dir, "Dummy").expect("a folder without XML has the generics");
        let names: Vec<&str> = only_generics.events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["heartbeat", "summaryState"]);
        assert_eq!(only_generics.commands.len(), 1);
        assert!(only_generics.telemetry.is_empty());

        let own = "<SALEventSet><SALEvent><EFDB_Topic>Dummy_logevent_heartbeat</EFDB_Topic>\
            <item><EFDB_Name>beat</EFDB_Name><IDL_Type>long</IDL_Type></item></SALEvent></SALEventSet>";
        std::fs::write(folder.join("Dummy_Events.xml"), own).expect("write");
        std::fs::write(
            folder.join("Dummy_Telemetry.xml"),
            "<SALTelemetrySet><SALTelemetry>\
            <EFDB_Topic>Dummy_t</EFDB_Topic></SALTelemetry></SALTelemetrySet>",
        )
        .expect("write");
        let merged = load(&dir, "Dummy").expect("valid");
        assert_eq!(merged.events.len(), 2);
        assert_eq!(merged.event("heartbeat").expect("own").fields[0].name, "beat");
        assert_eq!(
            merged.telemetry("t").expect("telemetry").rate_hz,
            Some(DEFAULT_RATE_HZ)
        );

        std::fs::write(folder.join("Dummy_Commands.xml"), "<SALCommandSet><SALCommand>").expect("write");
        match load(&dir, "Dummy") {
            Err(InterfaceError::Xml { path, .. }) => assert_eq!(path, folder.join("Dummy_Commands.xml")),
            other => panic!("expected an Xml error, got {other:?}"),
        }
        std::fs::remove_file(dir.join("SALGenerics.xml")).expect("remove");
        std::fs::remove_file(folder.join("Dummy_Commands.xml")).expect("remove");
        match load(&dir, "Dummy") {
            Err(InterfaceError::Io { path, .. }) => assert_eq!(path, dir.join("SALGenerics.xml")),
            other => panic!("expected an Io error, got {other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
