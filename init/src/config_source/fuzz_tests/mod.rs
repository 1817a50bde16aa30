//! Deterministic fuzzing of the config source's parsers, run by every
//! `cargo test` (modelled on config/tests/fuzz.rs): a seeded xorshift
//! generator, structure-aware mutations of valid inputs plus raw bytes,
//! and real invariants checked on every case.
//!
//! `HV_FUZZ_SEED` (decimal or `0x` hex) changes the stream,
//! `HV_FUZZ_ITERS` the number of cases per target and `HV_FUZZ_SECS`, if
//! set, runs each target for that long instead, for a long run:
//!
//! ```text
//! HV_FUZZ_SECS=300 cargo test --release -p hv-init fuzz -- --nocapture
//! ```
//!
//! The HTTP and probe targets live next to the code they fuzz (as child
//! modules of `http` and `probe`, so they reach its private parsers);
//! this module holds the generator, the run loop and the URL target.

mod url;

use std::time::{Duration, Instant};

/// The seed every `cargo test` uses unless `HV_FUZZ_SEED` says otherwise.
const DEFAULT_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// xorshift64*: a fixed seed makes any failure reproducible.
pub struct Rng(u64);

impl Rng {
    /// A stream for one target: the run's seed mixed with the target's
    /// name, so targets do not share a stream.
    pub fn for_target(seed: u64, target: &str) -> Rng {
        let mut state = seed ^ 0xcbf2_9ce4_8422_2325;
        for b in target.bytes() {
            state = (state ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(state.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n` (0 for `n == 0`).
    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }

    /// True once in `n` draws.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// `len` random bytes, `len` drawn from `0..max`.
    pub fn bytes_below(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max);
        self.bytes(len)
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }
}

/// Byte-level mutations: bit flips, deletions, insertions of `tokens`,
/// duplicated slices, truncation, random bytes.
pub fn mutate(rng: &mut Rng, input: &mut Vec<u8>, tokens: &[&[u8]]) {
    for _ in 0..=rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(7) {
            0 if !input.is_empty() => {
                let i = at.min(input.len() - 1);
                input[i] ^= 1 << rng.below(8);
            }
            1 if !input.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(input.len());
                input.drain(at.min(end)..end);
            }
            2 if !tokens.is_empty() => {
                let token = rng.pick(tokens);
                input.splice(at..at, token.iter().copied());
            }
            3 if !input.is_empty() => {
                let start = rng.below(input.len());
                let end = (start + 1 + rng.below(64)).min(input.len());
                let chunk = input[start..end].to_vec();
                input.splice(at..at, chunk);
            }
            4 if rng.one_in(4) => input.truncate(at),
            5 if !input.is_empty() => {
                let i = at.min(input.len() - 1);
                input[i] = rng.byte();
            }
            _ => input.insert(at, rng.byte()),
        }
    }
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// The run's seed: `HV_FUZZ_SEED` or the fixed default.
pub fn seed() -> u64 {
    env_number("HV_FUZZ_SEED").unwrap_or(DEFAULT_SEED)
}

/// Runs `case` with a fresh generator state per case until the iteration
/// count (`HV_FUZZ_ITERS`, else `default_iters`) or the time
/// (`HV_FUZZ_SECS`) is used up. A failing case names the seed and case
/// number that reproduce it (`HV_FUZZ_SEED=… HV_FUZZ_ITERS=…`).
pub fn run(target: &str, default_iters: u64, mut case: impl FnMut(&mut Rng)) {
    let seed = seed();
    let secs = env_number("HV_FUZZ_SECS");
    let iters = env_number("HV_FUZZ_ITERS").unwrap_or(default_iters);
    let mut rng = Rng::for_target(seed, target);
    let start = Instant::now();
    let mut done = 0u64;
    loop {
        match secs {
            Some(s) if start.elapsed() >= Duration::from_secs(s) => break,
            None if done >= iters => break,
            _ => {}
        }
        // Report the case a panic happened in; the panic itself follows.
        let guard = CaseGuard {
            target,
            seed,
            case: done,
        };
        case(&mut rng);
        std::mem::forget(guard);
        done += 1;
    }
    eprintln!(
        "fuzz {target}: {done} cases in {:.1?} (seed {seed:#x})",
        start.elapsed()
    );
}

/// Prints which case failed when a case panics (dropped only while
/// unwinding; a case that returns is forgotten).
struct CaseGuard<'a> {
    target: &'a str,
    seed: u64,
    case: u64,
}

impl Drop for CaseGuard<'_> {
    fn drop(&mut self) {
        eprintln!(
            "fuzz {}: case {} failed (HV_FUZZ_SEED={:#x} HV_FUZZ_ITERS={} reproduces it)",
            self.target,
            self.case,
            self.seed,
            self.case + 1
        );
    }
}
