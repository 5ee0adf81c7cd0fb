//! Visible skips: a test whose requirement (Docker, root) is missing either fails (under
//! `DOCKNS_REQUIRE_DOCKER=1`, which `.ci/run` sets) or records a skip and says so on the
//! terminal, past the test harness's output capture. `.ci/run` counts the records.
//!
//! It must not let a skipped test look like a test that ran: libtest has no "skipped" status,
//! so the record (`target/tmp/dockns-skips/<crate>--<test>`) and the uncaptured line are the
//! signal; it must not decide what a test needs (each test asks for its own requirements).

use std::io::Write;

/// Where skip records go: one file per skipped test, named `<test crate>--<test>`.
pub const SKIP_DIR: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/dockns-skips");

/// Whether a missing requirement must fail the test instead of skipping it.
pub fn required() -> bool {
    std::env::var("DOCKNS_REQUIRE_DOCKER").as_deref() == Ok("1")
}

/// The running test's name (libtest names each test's thread after it).
fn test_name() -> String {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("unnamed-test")
        .to_string()
}

/// Reports that the running test cannot run because `why`: panics under
/// `DOCKNS_REQUIRE_DOCKER=1`; otherwise records the skip, prints a loud line that the harness
/// does not capture, and returns (the caller then returns from the test).
pub fn skip(why: &str) {
    let test = test_name();
    if required() {
        panic!("DOCKNS_REQUIRE_DOCKER=1 but {test} cannot run: {why}");
    }
    let file = format!(
        "{SKIP_DIR}/{}--{}",
        env!("CARGO_CRATE_NAME"),
        test.replace(['/', ':'], "_")
    );
    let recorded = std::fs::create_dir_all(SKIP_DIR)
        .and_then(|_| std::fs::write(&file, format!("{why}\n")))
        .map(|_| format!("recorded in {file}"))
        .unwrap_or_else(|e| format!("could not record it in {file}: {e}"));
    // Straight to the process's stderr: `eprintln!` is captured for passing tests.
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n!!! SKIPPED {}::{test}: {why} ({recorded}). Set DOCKNS_REQUIRE_DOCKER=1 to make this a failure. !!!",
        env!("CARGO_CRATE_NAME")
    );
}

/// Whether this process is root; when it is not, reports the skip (see [`skip`]).
pub fn require_root(what: &str) -> bool {
    if dockns::privileges::is_root() {
        return true;
    }
    skip(&format!("needs root ({what}); run the tests as root"));
    false
}
