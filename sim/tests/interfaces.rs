//! The site's XML interface definitions load, and the project's builtin
//! (compact) definitions of the simulated CSCs agree with them.
//!
//! A user would notice a failure here as a simulator whose topics, fields,
//! types, array lengths or units differ from the observatory's: a dashboard
//! or script built against the simulator would break at the site.
//!
//! The XML is not part of the repository: it is expected in `shared/`
//! beside it (`<repo>/../shared/reference/ts_xml`), or where
//! `MERIDIAN_TS_XML` points. Without it these tests print why they were
//! skipped, and fail where `CI` is set (see `site_xml`).

use meridian_proto::{Category, FieldSchema, ValueKind};
use meridian_sim::interface::{Interface, InterfaceError, Part};
use meridian_sim::xml;
use std::path::Path;

mod site_xml;

/// Every CSC folder of the XML directory, sorted.
fn csc_folders(dir: &Path) -> Vec<String> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

fn load(dir: &Path, csc: &str) -> Interface {
    Interface::from_xml_dir(dir, csc).unwrap_or_else(|e| panic!("{csc}: {e}"))
}

fn field<'a>(fields: &'a [FieldSchema], name: &str) -> &'a FieldSchema {
    fields
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no field {name}"))
}

#[test]
fn every_csc_of_the_site_loads() {
    let Some(dir) = site_xml::dir() else { return };
    let cscs = csc_folders(&dir);
    assert!(
        cscs.len() >= 50,
        "only {} CSC folders in {}",
        cscs.len(),
        dir.display()
    );
    let mut failures = Vec::new();
    for csc in &cscs {
        let interface = match Interface::from_xml_dir(&dir, csc) {
            Ok(interface) => interface,
            Err(e) => {
                failures.push(e.to_string());
                continue;
            }
        };
        assert_eq!(&interface.csc, csc);
        assert!(
            interface.event("heartbeat").is_some(),
            "{csc} has no heartbeat event"
        );
        assert!(interface.command("start").is_some(), "{csc} has no start command");
        for t in &interface.telemetry {
            assert_eq!(t.category, Category::Telemetry, "{csc} {}", t.name);
            assert!(t.rate_hz.is_some_and(|r| r > 0.0), "{csc} {} has no rate", t.name);
        }
        for e in &interface.events {
            assert_eq!(
                (e.category, e.rate_hz),
                (Category::Event, None),
                "{csc} {}",
                e.name
            );
        }
        let topics = interface.topics();
        assert_eq!(topics.len(), interface.telemetry.len() + interface.events.len());
    }
    assert!(failures.is_empty(), "failed to load:\n{}", failures.join("\n"));
}

#[test]
fn facts_of_the_site_come_through() {
    let Some(dir) = site_xml::dir() else { return };
    let load = |csc: &str| load(&dir, csc);
    let m1m3 = load("MTM1M3");
    let forces = m1m3.telemetry("forceActuatorData").expect("forceActuatorData");
    let z = field(&forces.fields, "zForce");
    assert_eq!(
        (z.kind, z.count, z.units.as_str()),
        (ValueKind::Float, Some(156), "N")
    );
    assert!(
        m1m3.float32
            .contains(Part::Telemetry, "forceActuatorData", "zForce"),
        "zForce is a 32-bit float"
    );
    assert_eq!(
        forces.rate_hz,
        Some(50.0),
        "the builtin's rate for a topic it has"
    );
    let unknown_rate = m1m3
        .telemetry("forceActuatorPressure")
        .expect("forceActuatorPressure");
    assert_eq!(unknown_rate.rate_hz, Some(xml::DEFAULT_RATE_HZ));

    let mount = load("MTMount");
    let p = field(
        &mount.telemetry("azimuth").expect("azimuth").fields,
        "actualPosition",
    );
    assert_eq!(
        (p.kind, p.count, p.units.as_str()),
        (ValueKind::Float, None, "deg")
    );
    assert!(
        !mount
            .float32
            .contains(Part::Telemetry, "azimuth", "actualPosition"),
        "the mount's actualPosition is a double"
    );
    assert!(
        mount.event("clockOffset").is_none(),
        "opt-in generics are not merged"
    );

    let test = load("Test");
    let int0 = field(&test.telemetry("arrays").expect("arrays").fields, "int0");
    assert_eq!((int0.kind, int0.count), (ValueKind::Int, Some(5)));
    let string0 = field(&test.telemetry("scalars").expect("scalars").fields, "string0");
    assert_eq!(
        (string0.kind, string0.count),
        (ValueKind::Str, None),
        "a string's Count is its length"
    );
    let level = field(
        &test.command("setLogLevel").expect("generic command").params,
        "level",
    );
    assert_eq!(level.kind, ValueKind::Int);

    assert!(load("Script").telemetry.is_empty());
    assert!(load("ScriptQueue").telemetry.is_empty());
    let generics_only = load("ATHeaderService");
    assert!(generics_only.telemetry.is_empty());
    assert!(generics_only.event("summaryState").is_some());

    match Interface::from_xml_dir(&dir, "NoSuchCsc") {
        Err(InterfaceError::NoDefinition { csc, .. }) => assert_eq!(csc, "NoSuchCsc"),
        other => panic!("expected NoDefinition, got {other:?}"),
    }
}

/// Where `builtin` differs from `site`: missing topics or commands, or
/// fields that differ in name, order, kind, count or units.
fn differences(kind: &str, name: &str, builtin: &[FieldSchema], site: Option<&[FieldSchema]>) -> Vec<String> {
    let Some(site) = site else {
        return vec![format!("{kind} {name} is not in the site's XML")];
    };
    if builtin == site {
        return Vec::new();
    }
    let mut out = Vec::new();
    for f in builtin {
        match site.iter().find(|s| s.name == f.name) {
            None => out.push(format!(
                "{kind} {name}: field {} is not in the site's XML",
                f.name
            )),
            Some(s) if s != f => out.push(format!(
                "{kind} {name}: field {}: builtin {f:?}, site {s:?}",
                f.name
            )),
            Some(_) => {}
        }
    }
    for s in site {
        if !builtin.iter().any(|f| f.name == s.name) {
            out.push(format!(
                "{kind} {name}: field {} of the site is missing (topics are kept whole)",
                s.name
            ));
        }
    }
    if out.is_empty() {
        out.push(format!(
            "{kind} {name}: fields in a different order than the site's"
        ));
    }
    out
}

#[test]
fn builtin_interfaces_agree_with_the_sites_xml() {
    let Some(dir) = site_xml::dir() else { return };
    let mut problems = Vec::new();
    for csc in Interface::builtin_cscs() {
        let builtin = Interface::builtin(csc).expect("builtin");
        let site = load(&dir, csc);
        for t in &builtin.telemetry {
            let s = site.telemetry(&t.name).map(|s| s.fields.as_slice());
            problems.extend(
                differences("telemetry", &t.name, &t.fields, s)
                    .into_iter()
                    .map(|p| format!("{csc} {p}")),
            );
        }
        for e in &builtin.events {
            let s = site.event(&e.name).map(|s| s.fields.as_slice());
            problems.extend(
                differences("event", &e.name, &e.fields, s)
                    .into_iter()
                    .map(|p| format!("{csc} {p}")),
            );
        }
        for c in &builtin.commands {
            let s = site.command(&c.name).map(|s| s.params.as_slice());
            problems.extend(
                differences("command", &c.name, &c.params, s)
                    .into_iter()
                    .map(|p| format!("{csc} {p}")),
            );
        }
        // Float widths: `float` (32-bit) and `double` as the site types them.
        let parts = [
            (
                Part::Telemetry,
                builtin.telemetry.iter().map(|t| &t.name).collect::<Vec<_>>(),
            ),
            (Part::Event, builtin.events.iter().map(|e| &e.name).collect()),
            (Part::Command, builtin.commands.iter().map(|c| &c.name).collect()),
        ];
        for (part, names) in parts {
            for name in names {
                let (ours, theirs) = (builtin.float32.of(part, name), site.float32.of(part, name));
                if ours != theirs {
                    problems.push(format!(
                        "{csc} {part:?} {name}: 32-bit floats builtin {ours:?}, site {theirs:?}"
                    ));
                }
            }
        }
        // Command parameters' site types (their ranges are checked before a
        // command is sent).
        for c in &builtin.commands {
            if let Some(s) = site.command(&c.name) {
                if c.types != s.types {
                    problems.push(format!(
                        "{csc} command {}: parameter types builtin {:?}, site {:?}",
                        c.name, c.types, s.types
                    ));
                }
            }
        }
        // Rates are ours (the XML has none), and from_xml_dir borrows them.
        for t in &builtin.telemetry {
            assert_eq!(
                site.telemetry(&t.name).and_then(|s| s.rate_hz),
                t.rate_hz,
                "{csc} {}",
                t.name
            );
        }
    }
    assert!(
        problems.is_empty(),
        "builtin interfaces differ from the site's:\n{}",
        problems.join("\n")
    );
}

#[test]
fn builtin_generics_are_exactly_the_sites() {
    let Some(dir) = site_xml::dir() else { return };
    let (events, commands) = xml::read_generics(&dir).expect("SALGenerics.xml");
    let generics = Interface::parse_compact("generics", include_str!("../interfaces/generics.txt"))
        .expect("generics.txt");
    assert_eq!(
        generics.float32,
        xml::generics(&dir).expect("SALGenerics.xml").float32,
        "32-bit floats of the generics"
    );
    let mut ours: Vec<_> = generics.events.iter().map(|e| (&e.name, &e.fields)).collect();
    let mut theirs: Vec<_> = events.iter().map(|e| (&e.name, &e.fields)).collect();
    ours.sort_by_key(|(name, _)| name.as_str());
    theirs.sort_by_key(|(name, _)| name.as_str());
    assert_eq!(ours, theirs, "generic events");
    let mut ours: Vec<_> = generics.commands.iter().map(|c| (&c.name, &c.params)).collect();
    let mut theirs: Vec<_> = commands.iter().map(|c| (&c.name, &c.params)).collect();
    ours.sort_by_key(|(name, _)| name.as_str());
    theirs.sort_by_key(|(name, _)| name.as_str());
    assert_eq!(ours, theirs, "generic commands");
    for name in [
        "heartbeat",
        "summaryState",
        "logLevel",
        "logMessage",
        "softwareVersions",
        "errorCode",
    ] {
        assert!(events.iter().any(|e| e.name == name), "{name}");
    }
    for name in [
        "start",
        "enable",
        "disable",
        "standby",
        "exitControl",
        "setLogLevel",
    ] {
        assert!(commands.iter().any(|c| c.name == name), "{name}");
    }
}
