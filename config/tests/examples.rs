//! The example files in `config/examples/` are what operators copy: each
//! must parse and validate, show every key of the sections its role reads
//! with a comment above it, and hold the defaults unless it says otherwise.
//! A user would notice a broken example as a copied file that fails at
//! start, or a key they cannot discover.

use std::path::{Path, PathBuf};

use meridian_config::{Config, StoreBackend};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)
}

/// Example file and the sections its role reads.
const EXAMPLES: &[(&str, &[&str])] = &[
    ("ingest.toml", &["store", "tls", "ingest", "log", "metrics"]),
    ("frontend.toml", &["store", "frontend", "log", "metrics"]),
    ("producer.toml", &["tls", "producer", "log", "metrics"]),
    ("commander.toml", &["store", "commander", "log", "metrics"]),
    ("sim.toml", &["sim", "log"]),
    (
        "up.toml",
        &[
            "store",
            "tls",
            "ingest",
            "frontend",
            "producer",
            "commander",
            "sim",
            "log",
            "metrics",
        ],
    ),
];

#[test]
fn every_example_parses_and_validates() {
    let mut found: Vec<String> = std::fs::read_dir(example(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".toml"))
        .collect();
    found.sort();
    let mut listed: Vec<String> = EXAMPLES.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(
        found, listed,
        "every example is listed here, and every listed one exists"
    );

    for (name, _) in EXAMPLES {
        let config = Config::load(&example(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        config.validate().unwrap();
    }
}

#[test]
fn examples_hold_the_defaults_except_where_they_say() {
    for (name, _) in EXAMPLES {
        let config = Config::load(&example(name)).unwrap();
        let mut expected = Config::default();
        if matches!(*name, "ingest.toml" | "frontend.toml" | "commander.toml") {
            expected.store.backend = StoreBackend::Redis;
        }
        assert_eq!(config, expected, "{name}");
    }
}

#[test]
fn examples_show_every_key_of_their_sections_with_a_comment() {
    // Optional keys with no default (tls.cert, key, ca) serialize to
    // nothing; the examples show them commented out.
    let defaults: toml::Table = toml::from_str(&toml::to_string(&Config::default()).unwrap()).unwrap();
    for (name, sections) in EXAMPLES {
        let text = std::fs::read_to_string(example(name)).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        let mut present: Vec<&String> = table.keys().collect();
        present.sort();
        let mut wanted: Vec<String> = sections.iter().map(|s| s.to_string()).collect();
        wanted.sort();
        assert_eq!(present, wanted.iter().collect::<Vec<_>>(), "{name}: sections");
        for section in *sections {
            let keys = |t: &toml::Table| {
                let mut k: Vec<String> = t[*section].as_table().unwrap().keys().cloned().collect();
                k.sort();
                k
            };
            assert_eq!(keys(&table), keys(&defaults), "{name}: keys of [{section}]");
        }
        let mut previous = "";
        for line in text.lines() {
            let line = line.trim();
            if !line.is_empty() && !line.starts_with('#') && !line.starts_with('[') {
                assert!(previous.starts_with('#'), "{name}: no comment above {line:?}");
            }
            let commented_key = line
                .strip_prefix("# ")
                .and_then(|rest| rest.split_once(" = "))
                .is_some_and(|(key, _)| {
                    !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                });
            if commented_key {
                assert!(
                    previous.starts_with('#'),
                    "{name}: no comment above commented-out {line:?}"
                );
            }
            if !line.starts_with('[') {
                previous = line;
            }
        }
        for optional in ["# cert = ", "# key = ", "# ca = "] {
            if sections.contains(&"tls") {
                assert!(text.contains(optional), "{name}: shows {optional:?}");
            }
        }
    }
}
