//! `meridian-bench` as a reader runs it: every bench is a subcommand with
//! documented flags, the load generators it starts for itself stay hidden,
//! and `all` can be pointed at the `meridian` binary it runs.

use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian-bench"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_bench_is_a_subcommand_and_the_load_generators_are_hidden() {
    let text = help(&[]);
    for bench in ["all", "ingest", "fanout", "love"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(bench)),
            "{bench} missing: {text}"
        );
    }
    for hidden in ["fanout-clients", "love-clients"] {
        assert!(!text.contains(hidden), "{hidden} is listed: {text}");
    }
}

#[test]
fn every_bench_describes_its_flags() {
    for bench in ["all", "ingest", "fanout", "love"] {
        let text = help(&[bench]);
        for line in text.lines().filter(|l| l.trim_start().starts_with("--")) {
            // clap puts the description on the flag's line: none may be bare.
            assert!(
                line.trim().split("  ").filter(|p| !p.is_empty()).count() >= 2,
                "{bench}: undocumented flag: {line}"
            );
        }
    }
    let all = help(&["all"]);
    for flag in ["--out <FILE>", "--quick", "--no-love", "--meridian <PATH>"] {
        assert!(all.contains(flag), "all: {flag} missing: {all}");
    }
    assert!(help(&["love"]).contains("--meridian <PATH>"));
}
