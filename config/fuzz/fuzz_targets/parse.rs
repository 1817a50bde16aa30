//! Feeds arbitrary bytes to both parsers; the invariants are shared with the
//! seeded property test in ../tests/fuzz.rs.

#![no_main]

#[path = "../../tests/support/invariants.rs"]
mod invariants;

libfuzzer_sys::fuzz_target!(|data: &[u8]| invariants::check(data));
