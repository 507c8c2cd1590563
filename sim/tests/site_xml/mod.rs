//! Where the site's XML interface definitions (ts_xml) are, for the tests
//! that read them. They are not part of the repository: `$MERIDIAN_TS_XML`,
//! or `shared/reference/ts_xml` beside the repository.
//!
//! On a fresh clone with nothing beside it those tests say they were skipped
//! and why, so `./scripts/test` passes; where `CI` is set (CI has the XML),
//! a missing copy fails them instead of letting them pass unseen.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the XML is expected: `$MERIDIAN_TS_XML`, else `shared/reference/ts_xml` beside the repository.
fn expected() -> PathBuf {
    std::env::var_os("MERIDIAN_TS_XML")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/ts_xml"))
}

/// Whether this is a CI run (`CI` set to anything but empty, `0` or `false`), where nothing may be skipped.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// The site's XML folder, or `None` after printing why the calling test is
/// skipped. Panics instead when `CI` is set: CI must run these tests.
pub fn dir() -> Option<PathBuf> {
    let dir = expected();
    if dir.join("SALGenerics.xml").is_file() {
        return Some(dir);
    }
    let why = format!(
        "the site's XML interface definitions (ts_xml) are not at {}: put them in the `shared` \
         folder beside the repository or set MERIDIAN_TS_XML",
        dir.display()
    );
    assert!(!in_ci(), "CI is set, so this test may not be skipped: {why}");
    // The test harness names each test's thread after the test.
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    // Written to stderr itself, not with eprintln!, which the harness
    // captures and shows only for failed tests; in one write, so that
    // tests skipped at once do not mix their lines.
    let line = format!("skipped: {test}: {why}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    None
}
