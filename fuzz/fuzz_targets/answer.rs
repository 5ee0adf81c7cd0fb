//! Fuzzes `answer::handle` (fast path with slow fallback) against `answer::handle_slow`.
//! The checks live in `tests/kit/fuzz.rs` (`answer_target`), shared with
//! `tests/fuzz_regressions.rs`, which replays the seeds and saved crashes through them.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/kit/fuzz.rs"]
#[allow(dead_code)]
mod checks;

fuzz_target!(|data: &[u8]| checks::answer_target(data));
