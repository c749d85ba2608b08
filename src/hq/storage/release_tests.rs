//! Release registry, package chunks and the rollout engine on each storage engine: the engine is
//! driven tick by tick with explicit instants (a manual clock), stores report through `ingest` as
//! a pushed `release.status` would arrive, and assignments are read back from the stores' feeds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};

use ed25519_dalek::SigningKey;
use jiff::Timestamp;
use serde_json::{json, Value};

use super::*;
use crate::hq::error::HqError;
use crate::hq::releases::{
    PutRelease, ReleaseRow, RolloutRow, RolloutSpec, RolloutState, CHUNK_BYTES,
};
use crate::hq::rollout::{StoreState, Wave};
use crate::proto::release::{Manifest, PackageFacts};
use crate::proto::{StoreEvent, StoreReport};

pub(crate) fn t(min: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + min * 60).unwrap()
}

/// Pseudo-random package bytes (deterministic).
pub(crate) fn package_bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

pub(crate) fn sign(version: &str, bytes: &[u8]) -> Manifest {
    Manifest::sign(
        &SigningKey::from_bytes(&[7; 32]),
        "storebox",
        version,
        &PackageFacts::of_bytes(bytes),
        "stable",
        1_000 + version.len() as u64,
        t(-60),
        t(60 * 24 * 365),
    )
    .unwrap()
}

/// Registers `version` with `bytes` through a temp file as the upload handler does.
pub(crate) async fn publish(
    s: &dyn HqStorage,
    dir: &std::path::Path,
    version: &str,
    bytes: &[u8],
) -> HqResult<PutRelease> {
    let tmp = dir.join(format!("upload-{}.part", uuid::Uuid::new_v4().simple()));
    std::fs::write(&tmp, bytes).unwrap();
    let r = s
        .put_release(
            ReleaseRow {
                manifest: sign(version, bytes),
                uploaded_ms: 5,
                uploaded_by: "admin token".into(),
            },
            &tmp,
        )
        .await;
    let _ = std::fs::remove_file(&tmp);
    r
}

/// Registry: create, idempotent re-upload, conflicting bytes; chunk reads with ranges.
pub(crate) async fn releases_and_package_ranges(s: &dyn HqStorage) {
    let dir = tempfile::tempdir().unwrap();
    let size = 2 * CHUNK_BYTES + CHUNK_BYTES / 2 + 7;
    let bytes = package_bytes(size, 1);
    assert_eq!(
        publish(s, dir.path(), "1.5.0", &bytes).await.unwrap(),
        PutRelease::Created
    );
    assert_eq!(
        publish(s, dir.path(), "1.5.0", &bytes).await.unwrap(),
        PutRelease::Unchanged,
        "the same bytes again are fine"
    );
    let other = package_bytes(1000, 2);
    match publish(s, dir.path(), "1.5.0", &other).await {
        Err(HqError::Conflict(m)) => assert!(m.contains("1.5.0"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    publish(s, dir.path(), "1.6.0", &other).await.unwrap();
    let list = s.releases().await.unwrap();
    assert_eq!(list.len(), 2);
    let r = s.release("1.5.0").await.unwrap().unwrap();
    assert_eq!(r.manifest, sign("1.5.0", &bytes));
    assert_eq!(r.uploaded_by, "admin token");
    assert!(s.release("9.9.9").await.unwrap().is_none());
    let sha = &r.manifest.sha256;
    let ch = CHUNK_BYTES as u64;
    for (off, len) in [
        (0u64, 10usize),
        (ch - 5, 10),
        (ch, CHUNK_BYTES),
        (ch - 1, CHUNK_BYTES),
        (size as u64 - 3, 100),
        (17, 2 * CHUNK_BYTES),
    ] {
        let got = s.package_chunk(sha, off, len).await.unwrap();
        let end = (off as usize + len).min(size);
        assert_eq!(got, bytes[off as usize..end], "offset {off} len {len}");
    }
    // Read whole, 1 MiB at a time, as the download handler streams it.
    let mut all = Vec::new();
    while all.len() < size {
        let b = s
            .package_chunk(sha, all.len() as u64, CHUNK_BYTES)
            .await
            .unwrap();
        assert!(!b.is_empty());
        all.extend(b);
    }
    assert_eq!(all, bytes);
    assert!(s
        .package_chunk(sha, size as u64, 10)
        .await
        .unwrap()
        .is_empty());
}

pub(crate) struct Fleet {
    pub tokens: HashMap<String, String>,
    seq: AtomicI64,
    pub _dir: tempfile::TempDir,
}

/// p1 (pilot), c1-c4 (canary), s1-s5 (no group), and release 1.5.0.
pub(crate) async fn fleet(s: &dyn HqStorage) -> Fleet {
    let mut tokens = HashMap::new();
    tokens.insert("p1".into(), s.add_store("p1", "pilot", 0).await.unwrap());
    for i in 1..=4 {
        let id = format!("c{i}");
        tokens.insert(id.clone(), s.add_store(&id, "canary", 0).await.unwrap());
    }
    for i in 1..=5 {
        let id = format!("s{i}");
        tokens.insert(id.clone(), s.add_store(&id, "", 0).await.unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    publish(s, dir.path(), "1.5.0", &package_bytes(5000, 3))
        .await
        .unwrap();
    Fleet {
        tokens,
        seq: AtomicI64::new(1),
        _dir: dir,
    }
}

pub(crate) fn spec(urgent: bool) -> RolloutSpec {
    let wave = |groups: &[&str], all, pct, soak| Wave {
        groups: groups.iter().map(|g| g.to_string()).collect(),
        all,
        min_success_percent: pct,
        soak_minutes: soak,
    };
    RolloutSpec {
        version: "1.5.0".into(),
        waves: vec![
            wave(&["pilot"], false, 100, 60),
            wave(&["canary"], false, 75, 30),
            wave(&[], true, 100, 0),
        ],
        abort_failure_percent: 20,
        store_timeout_minutes: 240,
        urgent,
    }
}

pub(crate) async fn start(s: &dyn HqStorage, id: &str, spec: RolloutSpec, at: i64) {
    s.create_rollout(RolloutRow {
        id: id.into(),
        spec,
        state: RolloutState::Running,
        reason: String::new(),
        created_ms: t(at).as_millisecond(),
        updated_ms: t(at).as_millisecond(),
        created_by: "ops".into(),
    })
    .await
    .unwrap();
}

impl Fleet {
    /// The store pushes `release.status` (through `ingest`, as `/sync/v1/events` does).
    pub(crate) async fn report(
        &self,
        s: &dyn HqStorage,
        store: &str,
        state: &str,
        rollout: Option<&str>,
        at: i64,
    ) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let mut payload =
            json!({"version": "1.5.0", "state": state, "reason": format!("{state} at {at}")});
        if let Some(r) = rollout {
            payload["rollout"] = json!(r);
        }
        let batch = PushBatch {
            report: StoreReport::default(),
            events: vec![StoreEvent {
                seq,
                id: format!("st-{seq}"),
                event_type: "release.status".into(),
                class: "business".into(),
                payload: crate::proto::raw_payload(&payload.to_string()),
                at: "2026-01-01T00:00:00Z".into(),
            }],
        };
        s.ingest(store, batch, t(at).as_millisecond())
            .await
            .unwrap();
    }
}

/// The `release.assign` events in a store's feed.
pub(crate) async fn assigns(s: &dyn HqStorage, store: &str, group: &str) -> Vec<serde_json::Value> {
    let ident = StoreIdent {
        id: store.into(),
        group: group.into(),
    };
    s.feed(&ident, 0, 1000)
        .await
        .unwrap()
        .events
        .into_iter()
        .filter(|e| e.event_type == "release.assign")
        .map(|e| e.payload)
        .collect()
}

/// The `release.withdraw` events in a store's feed.
pub(crate) async fn withdraws(s: &dyn HqStorage, store: &str, group: &str) -> Vec<Value> {
    let ident = StoreIdent {
        id: store.into(),
        group: group.into(),
    };
    s.feed(&ident, 0, 1000)
        .await
        .unwrap()
        .events
        .into_iter()
        .filter(|e| e.event_type == "release.withdraw")
        .map(|e| e.payload)
        .collect()
}

fn group_of(store: &str) -> &'static str {
    match store {
        "p1" => "pilot",
        c if c.starts_with('c') => "canary",
        _ => "",
    }
}

/// Asserts which stores' feeds carry exactly one `release.withdraw` (of `rollout`, `version`,
/// `reason`) and that every other store's carries none.
async fn assert_withdrawn(
    s: &dyn HqStorage,
    f: &Fleet,
    expect: &[&str],
    rollout: &str,
    version: &str,
    reason: &str,
) {
    for id in f.tokens.keys() {
        let w = withdraws(s, id, group_of(id)).await;
        if expect.contains(&id.as_str()) {
            assert_eq!(w.len(), 1, "{id}: exactly one withdraw, got {w:?}");
            assert_eq!(
                w[0],
                json!({"rollout": rollout, "version": version, "reason": reason}),
                "{id}"
            );
        } else {
            assert!(w.is_empty(), "{id} gets no withdraw: {w:?}");
        }
    }
}

async fn tick(s: &dyn HqStorage, id: &str, at: i64) -> Vec<String> {
    let mut v: Vec<String> = s
        .tick_rollout(id, t(at))
        .await
        .unwrap()
        .assign
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    v.sort();
    v
}

/// pilot → canary → all: each wave opens only once the previous committed and soaked; every
/// assigned store gets exactly one `release.assign`; attempts count `installing` reports.
pub(crate) async fn rollout_waves_advance_on_commits(s: &dyn HqStorage) {
    let f = fleet(s).await;
    start(s, "r1", spec(false), 0).await;
    assert_eq!(tick(s, "r1", 0).await, ["p1"]);
    assert!(tick(s, "r1", 1).await.is_empty(), "never assigned twice");
    let a = assigns(s, "p1", "pilot").await;
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0]["rollout"].as_str(), a[0]["version"].as_str()),
        (Some("r1"), Some("1.5.0"))
    );
    assert_eq!(a[0]["package"], "/sync/v1/releases/1.5.0/package");
    assert!(assigns(s, "c1", "canary").await.is_empty());
    assert!(s.assigned("p1", "1.5.0").await.unwrap());
    assert!(!s.assigned("c1", "1.5.0").await.unwrap());
    // Installing and probation are not success. A report without `rollout` matches on version.
    f.report(s, "p1", "downloading", Some("r1"), 2).await;
    f.report(s, "p1", "installing", None, 5).await;
    f.report(s, "p1", "probation", Some("r1"), 10).await;
    assert!(tick(s, "r1", 11).await.is_empty());
    f.report(s, "p1", "committed", Some("r1"), 20).await;
    assert!(tick(s, "r1", 21).await.is_empty(), "soaking");
    assert!(tick(s, "r1", 79).await.is_empty(), "still soaking");
    assert_eq!(tick(s, "r1", 80).await, ["c1", "c2", "c3", "c4"]);
    let (_, rows, _) = s.rollout("r1").await.unwrap().unwrap();
    let p1 = rows.iter().find(|r| r.store == "p1").unwrap();
    assert_eq!(
        (p1.state, p1.attempts, p1.reason.as_str(), p1.wave),
        (StoreState::Committed, 1, "committed at 20", 0)
    );
    assert_eq!(rows.iter().filter(|r| r.wave == 1).count(), 4);
    for c in ["c1", "c2", "c3"] {
        f.report(s, c, "committed", Some("r1"), 90).await;
    }
    assert!(tick(s, "r1", 100).await.is_empty(), "canary soaks 30 min");
    let all = tick(s, "r1", 120).await;
    assert_eq!(all, ["s1", "s2", "s3", "s4", "s5"]);
    f.report(s, "c4", "committed", Some("r1"), 121).await;
    for i in 1..=5 {
        f.report(s, &format!("s{i}"), "committed", Some("r1"), 125)
            .await;
    }
    assert!(tick(s, "r1", 126).await.is_empty());
    let (row, rows, _) = s.rollout("r1").await.unwrap().unwrap();
    assert_eq!(row.state, RolloutState::Completed, "{}", row.reason);
    assert_eq!(rows.len(), 10);
    for id in f.tokens.keys() {
        let group = match id.as_str() {
            "p1" => "pilot",
            c if c.starts_with('c') => "canary",
            _ => "",
        };
        assert_eq!(assigns(s, id, group).await.len(), 1, "{id}: exactly once");
    }
    // A completed rollout is not ticked into anything else.
    assert!(tick(s, "r1", 500).await.is_empty());
}

/// Two canaries roll back (2 of 5 assigned = 40 % > 20 %): the rollout aborts before the last
/// wave and nobody else is assigned, however long we wait.
pub(crate) async fn rollout_aborts_before_the_last_wave(s: &dyn HqStorage) {
    let f = fleet(s).await;
    let mut sp = spec(false);
    sp.waves[0].soak_minutes = 0;
    start(s, "r1", sp, 0).await;
    tick(s, "r1", 0).await;
    f.report(s, "p1", "committed", Some("r1"), 1).await;
    assert_eq!(tick(s, "r1", 2).await.len(), 4);
    f.report(s, "c1", "rolled_back", Some("r1"), 3).await;
    assert!(tick(s, "r1", 4).await.is_empty());
    assert_eq!(
        s.rollout("r1").await.unwrap().unwrap().0.state,
        RolloutState::Running,
        "1 of 5 is not above 20 %"
    );
    f.report(s, "c2", "rolled_back", Some("r1"), 5).await;
    f.report(s, "c3", "committed", Some("r1"), 5).await;
    f.report(s, "c4", "committed", Some("r1"), 5).await;
    assert!(tick(s, "r1", 6).await.is_empty());
    let (row, rows, _) = s.rollout("r1").await.unwrap().unwrap();
    assert_eq!(row.state, RolloutState::Aborted);
    assert!(row.reason.contains("2 of 5"), "{}", row.reason);
    assert_eq!(rows.len(), 5);
    assert!(tick(s, "r1", 6000).await.is_empty());
    assert!(assigns(s, "s1", "").await.is_empty());
    assert!(!s.assigned("s1", "1.5.0").await.unwrap());
}

/// The engine aborts (2 of 5 rolled back): the canaries not yet installing get exactly one
/// `release.withdraw` with the abort reason, in the tick that aborts; committed, rolled back and
/// installing stores, and stores never assigned, get none; later ticks author nothing more.
pub(crate) async fn engine_abort_withdraws_pending_assignments(s: &dyn HqStorage) {
    let f = fleet(s).await;
    let mut sp = spec(false);
    sp.waves[0].soak_minutes = 0;
    start(s, "r1", sp, 0).await;
    tick(s, "r1", 0).await;
    f.report(s, "p1", "committed", Some("r1"), 1).await;
    assert_eq!(tick(s, "r1", 2).await, ["c1", "c2", "c3", "c4"]);
    f.report(s, "c1", "rolled_back", Some("r1"), 3).await;
    f.report(s, "c3", "installing", Some("r1"), 3).await;
    f.report(s, "c4", "waiting_window", Some("r1"), 3).await;
    assert_withdrawn(s, &f, &[], "r1", "1.5.0", "").await;
    f.report(s, "c2", "rolled_back", Some("r1"), 4).await;
    let t5 = s.tick_rollout("r1", t(5)).await.unwrap();
    assert!(t5.withdraw.is_some());
    let (row, _, _) = s.rollout("r1").await.unwrap().unwrap();
    assert_eq!(row.state, RolloutState::Aborted);
    assert!(row.reason.contains("2 of 5"), "{}", row.reason);
    assert_withdrawn(s, &f, &["c4"], "r1", "1.5.0", &row.reason).await;
    assert!(s.tick_rollout("r1", t(6)).await.unwrap().withdraw.is_none());
    assert_withdrawn(s, &f, &["c4"], "r1", "1.5.0", &row.reason).await;
}

/// Pause withdraws nothing; an operator abort withdraws from the stores assigned and not yet
/// installing (assigned, downloading, waiting_window), not from those in probation, committed
/// or refused. A new rollout of another version withdraws the superseded one's pending
/// assignments; one of the same version does not (it assigns that version again).
pub(crate) async fn operator_abort_and_supersede_withdraw(s: &dyn HqStorage) {
    let f = fleet(s).await;
    let mut sp = spec(true);
    sp.waves[0].soak_minutes = 0;
    start(s, "r1", sp.clone(), 0).await;
    tick(s, "r1", 0).await;
    f.report(s, "p1", "committed", Some("r1"), 1).await;
    assert_eq!(tick(s, "r1", 2).await, ["c1", "c2", "c3", "c4"]);
    f.report(s, "c1", "waiting_window", Some("r1"), 3).await;
    f.report(s, "c2", "downloading", Some("r1"), 3).await;
    f.report(s, "c3", "probation", Some("r1"), 3).await;
    let ms = |m: i64| t(m).as_millisecond();
    s.set_rollout_state("r1", RolloutState::Paused, "", ms(4))
        .await
        .unwrap();
    assert_withdrawn(s, &f, &[], "r1", "1.5.0", "").await;
    s.set_rollout_state("r1", RolloutState::Running, "", ms(5))
        .await
        .unwrap();
    let head = s.head().await.unwrap();
    s.set_rollout_state("r1", RolloutState::Aborted, "aborted by ops", ms(6))
        .await
        .unwrap();
    assert_eq!(s.head().await.unwrap(), head + 1, "one event");
    assert_withdrawn(s, &f, &["c1", "c2", "c4"], "r1", "1.5.0", "aborted by ops").await;

    // Supersede: r2 (1.6.0) assigns the pilot, then r3 of 1.5.0 replaces it.
    let dir = tempfile::tempdir().unwrap();
    publish(s, dir.path(), "1.6.0", &package_bytes(3000, 4))
        .await
        .unwrap();
    let mut sp16 = sp.clone();
    sp16.version = "1.6.0".into();
    start(s, "r2", sp16, 10).await;
    assert_eq!(tick(s, "r2", 10).await, ["p1"]);
    start(s, "r3", sp.clone(), 11).await;
    let w = withdraws(s, "p1", "pilot").await;
    assert_eq!(
        w,
        [json!({"rollout": "r2", "version": "1.6.0", "reason": "superseded by rollout r3"})]
    );
    // r4 of the same version as r3 withdraws nothing.
    assert_eq!(tick(s, "r3", 12).await, ["p1"]);
    let head = s.head().await.unwrap();
    start(s, "r4", sp, 13).await;
    assert_eq!(s.head().await.unwrap(), head);
    assert_eq!(withdraws(s, "p1", "pilot").await.len(), 1);
    let r3 = s.rollout("r3").await.unwrap().unwrap().0;
    assert_eq!(r3.state, RolloutState::Aborted);
}

/// Urgent skips soak, never health; pause stops assignment, resume continues; a silent store
/// times out (recorded, counted as failure, aborting); a new rollout supersedes an active one.
pub(crate) async fn rollout_urgent_pause_timeout(s: &dyn HqStorage) {
    let f = fleet(s).await;
    start(s, "r1", spec(true), 0).await;
    assert_eq!(tick(s, "r1", 0).await, ["p1"]);
    f.report(s, "p1", "probation", Some("r1"), 1).await;
    assert!(tick(s, "r1", 1).await.is_empty(), "probation is not health");
    f.report(s, "p1", "committed", Some("r1"), 2).await;
    s.set_rollout_state(
        "r1",
        RolloutState::Paused,
        "paused by ops",
        t(2).as_millisecond(),
    )
    .await
    .unwrap();
    assert!(tick(s, "r1", 3).await.is_empty(), "paused");
    let again = s
        .set_rollout_state("r1", RolloutState::Paused, "", t(3).as_millisecond())
        .await;
    assert!(matches!(again, Err(HqError::Conflict(_))), "{again:?}");
    s.set_rollout_state("r1", RolloutState::Running, "", t(4).as_millisecond())
        .await
        .unwrap();
    assert_eq!(
        tick(s, "r1", 4).await,
        ["c1", "c2", "c3", "c4"],
        "urgent: no soak after resume"
    );
    for c in ["c1", "c2", "c3"] {
        f.report(s, c, "committed", Some("r1"), 5).await;
    }
    // c4 stays silent. Canary is 75 % committed, so the last wave opens at once (urgent) ...
    assert_eq!(tick(s, "r1", 6).await.len(), 5);
    // ... and 240 minutes after c4's assignment it times out: 1 of 10 = 10 %, not above 20 %.
    assert!(tick(s, "r1", 244).await.is_empty());
    let (_, rows, _) = s.rollout("r1").await.unwrap().unwrap();
    let c4 = rows.iter().find(|r| r.store == "c4").unwrap();
    assert_eq!(c4.state, StoreState::TimedOut);
    assert!(c4.reason.contains("store_timeout_minutes"), "{}", c4.reason);
    // The last wave's five all time out too: 6 of 10 failed, abort.
    tick(s, "r1", 6 + 240).await;
    let (row, rows, _) = s.rollout("r1").await.unwrap().unwrap();
    assert_eq!(row.state, RolloutState::Aborted, "{}", row.reason);
    assert_eq!(
        rows.iter()
            .filter(|r| r.state == StoreState::TimedOut)
            .count(),
        6
    );
    let again = s
        .set_rollout_state("r1", RolloutState::Running, "", t(300).as_millisecond())
        .await;
    assert!(matches!(again, Err(HqError::Conflict(_))), "{again:?}");
    // A new rollout supersedes an active one.
    start(s, "r2", spec(false), 301).await;
    start(s, "r3", spec(false), 302).await;
    let list = s.rollouts().await.unwrap();
    let states: Vec<(&str, RolloutState)> = list.iter().map(|r| (r.id.as_str(), r.state)).collect();
    assert_eq!(
        states,
        [
            ("r3", RolloutState::Running),
            ("r2", RolloutState::Aborted),
            ("r1", RolloutState::Aborted)
        ]
    );
    assert!(list[1].reason.contains("superseded by rollout r3"));
    let unknown = s
        .create_rollout(RolloutRow {
            id: "r4".into(),
            spec: RolloutSpec {
                version: "7.7.7".into(),
                ..spec(false)
            },
            state: RolloutState::Running,
            reason: String::new(),
            created_ms: 0,
            updated_ms: 0,
            created_by: "ops".into(),
        })
        .await;
    assert!(
        matches!(&unknown, Err(HqError::Invalid { code: "invalid_rollout", message }) if message.contains("7.7.7")),
        "{unknown:?}"
    );
}

/// The events of `event_type` in a store's snapshot, each checked to sit at the snapshot's cursor.
async fn snapshot_events(
    s: &dyn HqStorage,
    store: &str,
    group: &str,
    event_type: &str,
) -> Vec<(String, Value)> {
    let ident = StoreIdent {
        id: store.into(),
        group: group.into(),
    };
    let snap = s.snapshot(&ident).await.unwrap();
    snap.events
        .into_iter()
        .filter(|e| e.event_type == event_type)
        .map(|e| {
            assert_eq!(e.seq, snap.cursor, "placed at the snapshot's cursor");
            (e.id, e.payload)
        })
        .collect()
}

/// The `release.assign` events in a store's snapshot.
async fn snapshot_assigns(s: &dyn HqStorage, store: &str, group: &str) -> Vec<(String, Value)> {
    snapshot_events(s, store, group, "release.assign").await
}

/// A store that rebuilds from the snapshot (installed after HQ assigned it, or answered 410)
/// still gets its pending assignment; not once it reported a final state, and not from an
/// aborted rollout.
pub(crate) async fn snapshot_carries_a_pending_assignment(s: &dyn HqStorage) {
    let f = fleet(s).await;
    let mut sp = spec(false);
    sp.waves[0].soak_minutes = 0;
    start(s, "r1", sp, 0).await;
    assert!(
        snapshot_assigns(s, "p1", "pilot").await.is_empty(),
        "not assigned yet"
    );
    assert_eq!(tick(s, "r1", 0).await, ["p1"]);
    let a = snapshot_assigns(s, "p1", "pilot").await;
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].0, "snapshot-release-r1");
    let fed = assigns(s, "p1", "pilot").await;
    assert_eq!(
        a[0].1, fed[0],
        "the same payload as the feed's release.assign"
    );
    assert!(snapshot_assigns(s, "c1", "canary").await.is_empty());
    // Still pending while it downloads; gone once committed.
    f.report(s, "p1", "downloading", Some("r1"), 1).await;
    assert_eq!(snapshot_assigns(s, "p1", "pilot").await.len(), 1);
    f.report(s, "p1", "committed", Some("r1"), 2).await;
    assert!(snapshot_assigns(s, "p1", "pilot").await.is_empty());
    // The canaries are assigned; an operator aborts: nobody gets it from the snapshot any more.
    assert_eq!(tick(s, "r1", 3).await.len(), 4);
    assert_eq!(snapshot_assigns(s, "c2", "canary").await.len(), 1);
    s.set_rollout_state(
        "r1",
        RolloutState::Aborted,
        "aborted by ops",
        t(4).as_millisecond(),
    )
    .await
    .unwrap();
    assert!(snapshot_assigns(s, "c2", "canary").await.is_empty());
    // Instead it carries the withdrawal to the stores that have not answered it; not to p1
    // (committed) and, once c2 reported `refused`, not to c2.
    let w = snapshot_withdraws(s, "c2", "canary").await;
    assert_eq!(
        w,
        [(
            "snapshot-withdraw-r1".to_string(),
            json!({"rollout": "r1", "version": "1.5.0", "reason": "aborted by ops"})
        )]
    );
    assert!(snapshot_withdraws(s, "p1", "pilot").await.is_empty());
    f.report(s, "c2", "refused", Some("r1"), 5).await;
    assert!(snapshot_withdraws(s, "c2", "canary").await.is_empty());
    assert_eq!(snapshot_withdraws(s, "c3", "canary").await.len(), 1);
    // A newer rollout of the same version supersedes a rollout: no withdrawal in the snapshot.
    start(s, "r2", spec(true), 10).await;
    assert_eq!(tick(s, "r2", 10).await, ["p1"]);
    start(s, "r3", spec(true), 11).await;
    assert!(snapshot_withdraws(s, "p1", "pilot").await.is_empty());
    assert_eq!(
        snapshot_assigns(s, "p1", "pilot").await.len(),
        0,
        "r3 not ticked yet"
    );
}

/// The `release.withdraw` events in a store's snapshot.
async fn snapshot_withdraws(s: &dyn HqStorage, store: &str, group: &str) -> Vec<(String, Value)> {
    snapshot_events(s, store, group, "release.withdraw").await
}

#[tokio::test]
async fn sqlite_snapshot_carries_a_pending_assignment() {
    let (_d, s) = super::tests::sqlite().await;
    snapshot_carries_a_pending_assignment(s.as_ref()).await;
}

#[tokio::test]
async fn sqlite_releases_and_package_ranges() {
    let (_d, s) = super::tests::sqlite().await;
    releases_and_package_ranges(s.as_ref()).await;
}

#[tokio::test]
async fn sqlite_rollout_waves_advance_on_commits() {
    let (_d, s) = super::tests::sqlite().await;
    rollout_waves_advance_on_commits(s.as_ref()).await;
}

#[tokio::test]
async fn sqlite_rollout_aborts_before_the_last_wave() {
    let (_d, s) = super::tests::sqlite().await;
    rollout_aborts_before_the_last_wave(s.as_ref()).await;
}

#[tokio::test]
async fn sqlite_engine_abort_withdraws_pending_assignments() {
    let (_d, s) = super::tests::sqlite().await;
    engine_abort_withdraws_pending_assignments(s.as_ref()).await;
}

#[tokio::test]
async fn sqlite_operator_abort_and_supersede_withdraw() {
    let (_d, s) = super::tests::sqlite().await;
    operator_abort_and_supersede_withdraw(s.as_ref()).await;
}

#[tokio::test]
async fn sqlite_rollout_urgent_pause_timeout() {
    let (_d, s) = super::tests::sqlite().await;
    rollout_urgent_pause_timeout(s.as_ref()).await;
}

#[cfg(feature = "postgres")]
mod pg {
    use std::sync::Arc;

    use super::*;
    use crate::hq::storage::postgres::PgStorage;
    use crate::hq::storage::tests::pgtest::TestDb;

    async fn open(db: &TestDb) -> PgStorage {
        PgStorage::connect(&db.url, 0).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pg_releases_and_package_ranges() {
        let db = TestDb::new().await;
        releases_and_package_ranges(&open(&db).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pg_rollout_waves_advance_on_commits() {
        let db = TestDb::new().await;
        rollout_waves_advance_on_commits(&open(&db).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pg_rollout_aborts_before_the_last_wave() {
        let db = TestDb::new().await;
        rollout_aborts_before_the_last_wave(&open(&db).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pg_engine_abort_withdraws_pending_assignments() {
        let db = TestDb::new().await;
        engine_abort_withdraws_pending_assignments(&open(&db).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pg_operator_abort_and_supersede_withdraw() {
        let db = TestDb::new().await;
        operator_abort_and_supersede_withdraw(&open(&db).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pg_snapshot_carries_a_pending_assignment() {
        let db = TestDb::new().await;
        snapshot_carries_a_pending_assignment(&open(&db).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pg_rollout_urgent_pause_timeout() {
        let db = TestDb::new().await;
        rollout_urgent_pause_timeout(&open(&db).await).await;
    }

    /// Two HQ nodes tick the same rollout concurrently, 16 times each, while the pilot commits:
    /// every store is assigned once and gets exactly one `release.assign`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_nodes_ticking_at_once_never_double_assign() {
        let db = TestDb::new().await;
        let nodes = [Arc::new(open(&db).await), Arc::new(open(&db).await)];
        let f = fleet(nodes[0].as_ref()).await;
        let mut sp = spec(true);
        sp.waves[0].soak_minutes = 0;
        start(nodes[0].as_ref(), "r1", sp, 0).await;
        let mut tasks = Vec::new();
        for round in 0..2 {
            if round == 1 {
                f.report(nodes[1].as_ref(), "p1", "committed", Some("r1"), 1)
                    .await;
            }
            for i in 0..16 {
                let node = nodes[i % 2].clone();
                tasks.push(tokio::spawn(async move {
                    node.tick_rollout("r1", t(2)).await.unwrap().assign.len()
                }));
            }
            let mut total = 0;
            for task in tasks.drain(..) {
                total += task.await.unwrap();
            }
            assert_eq!(total, if round == 0 { 1 } else { 4 }, "round {round}");
        }
        for (id, group) in [("p1", "pilot"), ("c1", "canary"), ("c4", "canary")] {
            assert_eq!(assigns(nodes[1].as_ref(), id, group).await.len(), 1, "{id}");
        }
        let (_, rows, _) = nodes[0].rollout("r1").await.unwrap().unwrap();
        assert_eq!(rows.len(), 5);
    }
}
