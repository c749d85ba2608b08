//! Bounded-time fuzzing of the parsers that read input from outside the box: device payloads
//! (MQTT), HQ events (sync feed and `storebox import`), CSV imports and the config file.
//!
//! A proptest-based mutational fuzzer on the stable toolchain: each target starts from the seed
//! files in `tests/fuzz/corpus/<target>/` (committed), runs every seed as it is, then mutates
//! seeds (byte flips, JSON/CSV/TOML tokens inserted, ranges deleted or repeated, truncation) and
//! also tries random bytes, until its time budget is spent. cargo-fuzz would need the nightly
//! toolchain and libFuzzer, which the CI machine does not have (a nightly toolchain exists on the
//! development machine, cargo-fuzz does not). The property is the same as libFuzzer's: no input
//! makes the parser panic (a panic in the broker guard or the sync client would take the box down).
//!
//! `FUZZ_SECS` sets the budget per target (default 1 s, so `cargo test` stays fast; `.ci/run` uses
//! 20 s). A failing input is printed escaped and written to `target/fuzz-crash-<target>.bin`;
//! add it to the corpus and as a unit test next to the parser.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

use storebox::broker::acl::TopicKind;

fn budget() -> Duration {
    let secs = std::env::var("FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(1.0);
    Duration::from_secs_f64(secs)
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!seeds.is_empty(), "empty corpus {}", dir.display());
    seeds
}

/// Pieces of the formats the targets read, inserted by mutations.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "\\",
    "\\u0000",
    "\\ud800",
    "null",
    "true",
    "false",
    "-",
    "0",
    "-0",
    "1e308",
    "-1e400",
    "9223372036854775807",
    "18446744073709551616",
    "0.5",
    "NaN",
    "\n",
    "\r\n",
    "=",
    "[[",
    "]]",
    "#",
    "'''",
    "\"\"\"",
    "|",
    "\u{feff}",
    "\u{10ffff}",
    "é",
    "\"type\":",
    "\"id\":",
    "\"payload\":",
    "\"metrics\":",
    "\"ts\":",
    "\"price\":",
    "\"quantity\":",
    "\"grams\":",
    "\"lines\":",
    "\"starts_at\":",
    "\"ends_at\":",
    "\"params\":",
    "\"percent\":",
    "\"kind\":",
    "\"skus\":",
    "\"sku\":",
    "2026-11-27T00:00:00",
    "2026-02-30T25:61:00Z",
    "2026-11-27T00:00:00+14:00",
    "\"checkout.completed\"",
    "\"scale.weighed\"",
    "\"promotion.upsert\"",
    "\"price.set\"",
    "\"catalog.upsert\"",
    "\"multi_buy\"",
    "\"buy_x_get_y\"",
    "\"amount_off\"",
    "\"percent_off\"",
    "\"kg\"",
    "\"each\"",
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, usize),
    Delete(usize, usize),
    Repeat(usize, usize, u8),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(i, t)| Mutation::Insert(i, t)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), 1usize..32, 1u8..64).prop_map(|(i, n, k)| Mutation::Repeat(i, n, k)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(mut input: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = input.len();
        match *m {
            Mutation::Flip(i, b) if len > 0 => input[i % len] ^= b,
            Mutation::Insert(i, t) => {
                let at = i % (len + 1);
                input.splice(at..at, TOKENS[t].bytes());
            }
            Mutation::Delete(i, n) if len > 0 => {
                let at = i % len;
                input.drain(at..(at + n).min(len));
            }
            Mutation::Repeat(i, n, k) if len > 0 => {
                let at = i % len;
                let piece: Vec<u8> = input[at..(at + n).min(len)].to_vec();
                for _ in 0..k {
                    input.splice(at..at, piece.iter().copied());
                }
            }
            Mutation::Truncate(i) if len > 0 => input.truncate(i % len),
            _ => {}
        }
    }
    input
}

fn inputs(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    prop_oneof![
        8 => (0..n, proptest::collection::vec(mutation(), 1..8))
            .prop_map(move |(s, ms)| apply(seeds[s].clone(), &ms)),
        1 => proptest::collection::vec(any::<u8>(), 0..256),
    ]
}

/// Runs `check` on every seed, then on generated inputs until the budget is spent.
fn fuzz(target: &str, mut check: impl FnMut(&[u8])) {
    let seeds = corpus(target);
    let mut run = |input: &[u8]| {
        if catch_unwind(AssertUnwindSafe(|| check(input))).is_err() {
            let out = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("target/fuzz-crash-{target}.bin"));
            let _ = std::fs::write(&out, input);
            panic!(
                "fuzz target {target} panicked on {:?} (written to {})",
                String::from_utf8_lossy(input),
                out.display()
            );
        }
    };
    for s in &seeds {
        run(s);
    }
    let strategy = inputs(seeds);
    let mut runner = TestRunner::default();
    let deadline = Instant::now() + budget();
    let mut cases = 0u64;
    while Instant::now() < deadline {
        let input = strategy.new_tree(&mut runner).unwrap().current();
        run(&input);
        cases += 1;
    }
    eprintln!("fuzz {target}: {cases} generated inputs, no panic");
}

#[test]
fn device_payloads() {
    const KINDS: [TopicKind; 7] = [
        TopicKind::Status,
        TopicKind::Telemetry,
        TopicKind::Events,
        TopicKind::Alerts,
        TopicKind::CommandAck,
        TopicKind::PriceRequest,
        TopicKind::Unknown,
    ];
    fuzz("payload", |input| {
        for kind in KINDS {
            let _ = storebox::devices::payloads::parse(kind, input, 1_764_000_000_000);
        }
    });
}

#[test]
fn hq_events() {
    let (mut validated, mut accepted) = (0u64, 0u64);
    fuzz("hq_event", |input| {
        if let Ok(ev) = serde_json::from_slice::<storebox::proto::HqEvent>(input) {
            validated += 1;
            // HQ's pure validation; what it accepts must survive its own wire round trip.
            if let Ok(body) = ev.body() {
                accepted += 1;
                let (t, payload) = body.to_wire();
                assert_eq!(
                    storebox::proto::validate(t.as_str(), &payload).as_ref(),
                    Ok(&body),
                    "an accepted event changes when sent again: {ev:?}"
                );
            }
        }
    });
    eprintln!("fuzz hq_event: {validated} well-formed events validated, {accepted} accepted");
    assert!(validated > 0, "no generated input reached the validator");
}

#[test]
fn csv_imports() {
    let mut rows = 0u64;
    fuzz("csv", |input| {
        let _ = storebox::proto::csv_events(input, |_, _| {
            rows += 1;
            Ok(())
        });
    });
    eprintln!("fuzz csv: {rows} rows read as events");
    assert!(rows > 0, "no generated input made an event");
}

#[test]
fn config_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("storebox.toml");
    fuzz("config", |input| {
        std::fs::write(&path, input).unwrap();
        let _ = storebox::config::Config::load_with_env(Some(&path), Vec::new());
        // The same bytes as an environment value of a few keys of each type.
        let value = String::from_utf8_lossy(input).into_owned();
        for key in [
            "STOREBOX_MQTT__MAX_SUBSCRIPTIONS",
            "STOREBOX_STORE__TIMEZONE",
            "STOREBOX_HQ__ALLOW_HOSTS",
            "STOREBOX_HTTP__LISTEN",
        ] {
            let _ =
                storebox::config::Config::load_with_env(None, vec![(key.into(), value.clone())]);
        }
    });
}
