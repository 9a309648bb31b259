//! Structure-aware fuzzing of every parser of untrusted input: policy YAML, the settings file,
//! control-socket requests, ring-buffer records, DNS messages, the argv masker, the
//! statements of held database clients and the spool's records as the network sinks read them.
//!
//! Each target is an ordinary `#[test]` that generates inputs from a seeded RNG (mostly mutated
//! valid inputs, so the parsers' deep paths run, not only their first length check) for a time
//! budget, and checks that nothing panics, that no input takes longer than its own deadline, and
//! the target's invariants. Knobs, all environment variables:
//!
//! - `GUARD_FUZZ_SECS`: seconds per target (default 2, so `cargo test` stays quick;
//!   `cargo xtask test` gives each about 8, `cargo xtask fuzz` as long as asked).
//! - `GUARD_FUZZ_SEED`: replay one input, by the seed a failure printed.
//! - `GUARD_FUZZ_INPUT_SECS`: the deadline of one input (default 10).
//!
//! A failure prints the input's seed, the line that replays it and the input itself. An input
//! that kills the whole process (a stack overflow aborts, it does not unwind) cannot print
//! anything afterwards, so the seed of the input being run is also kept in a small file under
//! the temp directory; the next run of that target says so and replays it first.
mod control;
mod dns;
mod mutate;
mod mask;
mod policy;
mod records;
mod settings;
mod spool;
mod sql;

use std::{
    fmt::Debug,
    fs,
    io::Write as _,
    os::unix::fs::FileExt as _,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

pub use mutate::Rng;

const DEFAULT_SECS: f64 = 2.0;
/// Far above any input's time in a debug build on a loaded machine: a deadline for hangs,
/// not a benchmark.
const DEFAULT_INPUT_SECS: f64 = 10.0;
/// How much of a failing input is printed (the seed reproduces all of it).
const SHOWN: usize = 4096;
/// Stack of the thread inputs run on: what a tokio worker gets, where the daemon parses.
const STACK: usize = 2 * 1024 * 1024;

/// Budget and seed, from the environment.
struct Settings {
    secs: f64,
    input_deadline: Duration,
    replay: Option<u64>,
}

impl Settings {
    fn from_env() -> Self {
        let secs = |name: &str, default: f64| match std::env::var(name) {
            Ok(v) => v.trim().parse::<f64>().unwrap_or_else(|_| panic!("{name}={v:?} is not a number of seconds")),
            Err(_) => default,
        };
        let replay = std::env::var("GUARD_FUZZ_SEED").ok().map(|v| parse_seed(&v).unwrap_or_else(|| panic!("GUARD_FUZZ_SEED={v:?} is not a seed")));
        Self {
            secs: secs("GUARD_FUZZ_SECS", DEFAULT_SECS).max(0.0),
            input_deadline: Duration::from_secs_f64(secs("GUARD_FUZZ_INPUT_SECS", DEFAULT_INPUT_SECS).max(0.01)),
            replay,
        }
    }
}

fn parse_seed(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// A fuzz target: `generate` makes an input from an RNG, `check` panics when the code under test
/// misbehaves on it. Both must be deterministic in the RNG, so a seed names an input.
pub struct Target<I> {
    /// The test's path below `fuzz::`, as given to `cargo test` to run it alone.
    pub name: &'static str,
    pub generate: fn(&mut Rng) -> I,
    pub check: fn(&I),
}

/// Where the seed of the input in flight is kept, in case the process dies on it.
fn inflight_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("guard-fuzz-{}.inflight", name.replace("::", "-")))
}

impl<I: Debug + 'static> Target<I> {
    /// Runs the target for its budget (or replays one seed) and panics on the first failure,
    /// naming the seed.
    pub fn run(&self) {
        let settings = Settings::from_env();
        let inflight = inflight_path(self.name);
        let mut first = Vec::new();
        if let Some(seed) = read_inflight(&inflight) {
            // Straight to stderr, past the test harness's capture: if the seed kills the
            // process again, captured output would be lost with it.
            let _ = writeln!(
                std::io::stderr(),
                "fuzz {}: a previous run died on seed {seed:#018x} (replay: GUARD_FUZZ_SEED={seed:#x} cargo test -p guard-agent fuzz::{}); running it first",
                self.name, self.name
            );
            first.push(seed);
        }
        let (seeds, base) = match settings.replay {
            Some(seed) => (Seeds::One(seed), seed),
            None => {
                let base = fresh_seed();
                (Seeds::From { base, until: Instant::now() + Duration::from_secs_f64(settings.secs) }, base)
            }
        };
        let current = Arc::new(AtomicU64::new(0));
        let started = Arc::new(AtomicU64::new(u64::MAX));
        let done = Arc::new(AtomicU64::new(0));
        let worker = {
            let (current, started, done) = (Arc::clone(&current), Arc::clone(&started), Arc::clone(&done));
            let (generate, check) = (self.generate, self.check);
            let file = fs::File::create(&inflight).ok();
            let epoch = Instant::now();
            thread::Builder::new()
                .name(format!("fuzz-{}", self.name))
                .stack_size(STACK)
                .spawn(move || {
                    let mut n = 0u64;
                    let mut slowest = (Duration::ZERO, 0);
                    for seed in first.into_iter().chain(seeds) {
                        current.store(seed, Ordering::SeqCst);
                        if let Some(f) = &file {
                            let _ = f.write_at(format!("{seed:#018x}\n").as_bytes(), 0);
                        }
                        let t = Instant::now();
                        started.store(epoch.elapsed().as_millis() as u64, Ordering::SeqCst);
                        let input = generate(&mut Rng::new(seed));
                        check(&input);
                        started.store(u64::MAX, Ordering::SeqCst);
                        slowest = slowest.max((t.elapsed(), seed));
                        n += 1;
                        done.store(n, Ordering::SeqCst);
                    }
                    slowest
                })
                .expect("spawning the fuzz thread")
        };
        let epoch = Instant::now();
        // Watch the worker: it ends (all inputs done, or one panicked) or one input overruns.
        loop {
            if worker.is_finished() {
                break;
            }
            let since = started.load(Ordering::SeqCst);
            if since != u64::MAX && epoch.elapsed().saturating_sub(Duration::from_millis(since)) > settings.input_deadline {
                let seed = current.load(Ordering::SeqCst);
                // The worker is left spinning: a thread cannot be killed, and the test process
                // ends when the test harness does.
                self.fail(seed, &format!("an input ran longer than its {:?} deadline", settings.input_deadline));
            }
            thread::sleep(Duration::from_millis(20));
        }
        let Ok((slowest, slowest_seed)) = worker.join() else {
            self.fail(current.load(Ordering::SeqCst), "the check panicked (message above)");
        };
        let _ = fs::remove_file(&inflight);
        println!(
            "fuzz {}: {} inputs in {:.1}s, base seed {base:#018x}; slowest {:.0}ms (seed {slowest_seed:#018x})",
            self.name,
            done.load(Ordering::SeqCst),
            epoch.elapsed().as_secs_f64(),
            slowest.as_secs_f64() * 1000.0,
        );
    }

    fn fail(&self, seed: u64, why: &str) -> ! {
        let input = format!("{:?}", (self.generate)(&mut Rng::new(seed)));
        let shown: String = input.chars().take(SHOWN).collect();
        let more = if shown.len() < input.len() { format!(" … ({} bytes in all)", input.len()) } else { String::new() };
        let _ = fs::remove_file(inflight_path(self.name));
        panic!(
            "fuzz {}: {why}\n  seed: {seed:#018x}\n  replay: GUARD_FUZZ_SEED={seed:#x} cargo test -p guard-agent fuzz::{}\n  input: {shown}{more}",
            self.name, self.name
        );
    }
}

fn read_inflight(path: &PathBuf) -> Option<u64> {
    parse_seed(fs::read_to_string(path).ok()?.lines().next()?)
}

/// Seeds of one run: one replayed seed, or one per input from a base until the deadline.
enum Seeds {
    One(u64),
    From { base: u64, until: Instant },
    Done,
}

impl Iterator for Seeds {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        match self {
            Seeds::One(seed) => {
                let s = *seed;
                *self = Seeds::Done;
                Some(s)
            }
            Seeds::Done => None,
            Seeds::From { base, until } => {
                if Instant::now() >= *until {
                    return None;
                }
                // Input seeds are scrambled so neighbouring inputs share nothing.
                *base = base.wrapping_add(1);
                Some(mutate::splitmix(*base))
            }
        }
    }
}

/// A base seed that differs between runs (time and pid), so every run explores anew.
fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    mutate::splitmix(nanos ^ (u64::from(std::process::id()) << 32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_in_hex_and_decimal() {
        assert_eq!(parse_seed("0x1f"), Some(31));
        assert_eq!(parse_seed(" 31 "), Some(31));
        assert_eq!(parse_seed("x"), None);
    }

    #[test]
    fn replayed_seeds_give_the_same_input() {
        let a = mutate::Rng::new(7).bytes(64);
        assert_eq!(a, mutate::Rng::new(7).bytes(64));
        assert_ne!(a, mutate::Rng::new(8).bytes(64));
    }
}
