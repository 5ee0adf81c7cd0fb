//! Fuzzes the hickory-backed slow parser (`wire::slow::parse_slow`).
//! The checks live in `tests/kit/fuzz.rs` (`parse_slow_target`), shared with
//! `tests/fuzz_regressions.rs`, which replays the seeds and saved crashes through them.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/kit/fuzz.rs"]
#[allow(dead_code)]
mod checks;

fuzz_target!(|data: &[u8]| checks::parse_slow_target(data));
