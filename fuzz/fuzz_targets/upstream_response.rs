//! Fuzzes what the forwarder does with bytes from an upstream (`forward::upstream_reply`).
//! The checks live in `tests/kit/fuzz.rs` (`upstream_response_target`), shared with
//! `tests/fuzz_regressions.rs`, which replays the seeds and saved crashes through them.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/kit/fuzz.rs"]
#[allow(dead_code)]
mod checks;

fuzz_target!(|data: &[u8]| checks::upstream_response_target(data));
