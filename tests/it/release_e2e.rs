//! Issue 15's full path with no stand-in for HQ: a package signed by `storebox release
//! keygen/sign` (a real .deb built by dpkg-deb) is uploaded with `POST /hq/v1/releases` to a real
//! `storebox hq` trusting that key; a rollout over three groups (pilot, canary, all) assigns it to
//! real `storebox serve` stores, which download it from HQ's `/sync/v1/releases/…`, verify it
//! against their `[updates] public_key`, stage it and write `request.json`; their `release.status`
//! events drive HQ's rollout engine (`rollout_tick_seconds` = 1).
//!
//! One stand-in, named as such: the **test installer** plays the root helper (reads
//! `request.json`, removes it, writes `result.json`, restarts the serve process with the debug-only
//! `STOREBOX_TEST_RUNNING_VERSION` set to the new version). The real helper is tested in
//! tests/install/run.sh.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::release::build_deb;
use crate::support::{eventually, Hq, StoreBox, BIN};
use crate::updates::{
    day_at, read_json, set_clock, state_becomes, updates, updates_dir, write_result,
};

/// Keys, a signed package and an HQ trusting the key.
struct Published {
    hq: Hq,
    public_key: String,
    tmp: tempfile::TempDir,
}

fn run(args: &[&str]) {
    let out = Command::new(BIN).args(args).output().expect("run storebox");
    assert!(
        out.status.success(),
        "storebox {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `storebox release keygen`, then HQ started trusting that key.
fn setup() -> Published {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    run(&["release", "keygen", "--out", p(&keys)]);
    let public_key = std::fs::read_to_string(keys.join("release.pub"))
        .unwrap()
        .trim()
        .to_string();
    let trusted = format!("[\"{public_key}\"]");
    let hq = Hq::start_with(&[
        ("STOREBOX_HQ_SERVER__RELEASE_PUBLIC_KEYS", trusted.as_str()),
        ("STOREBOX_HQ_SERVER__ROLLOUT_TICK_SECONDS", "1"),
    ]);
    Published {
        hq,
        public_key,
        tmp,
    }
}

/// Builds storebox `version` as a .deb, signs it with `storebox release sign` and uploads both
/// with `POST /hq/v1/releases`.
async fn publish(p_: &Published, version: &str) {
    let deb = build_deb(p_.tmp.path(), "storebox", version, "xz");
    let key = p_.tmp.path().join("keys/release.key");
    run(&["release", "sign", "--key", p(&key), p(&deb)]);
    let manifest = std::fs::read_to_string(format!("{}.manifest.json", deb.display())).unwrap();
    let form = reqwest::multipart::Form::new()
        .part(
            "package",
            reqwest::multipart::Part::bytes(std::fs::read(&deb).unwrap()).file_name("p.deb"),
        )
        .part(
            "manifest",
            reqwest::multipart::Part::text(manifest).file_name("m.json"),
        );
    let r = reqwest::Client::new()
        .post(format!("{}/hq/v1/releases", p_.hq.http))
        .bearer_auth(&p_.hq.admin)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert_eq!(status, 201, "{}", r.text().await.unwrap());
}

/// A real store in `group`, trusting the test key, its clock inside the install window.
fn start_store(p_: &Published, id: &str, group: &str) -> StoreBox {
    let token = p_.hq.add_store(id, group);
    let clock = p_.tmp.path().join(format!("clock-{id}"));
    set_clock(&clock, &day_at(2, "02:30"));
    let mut env = p_.hq.store_env(id, &token);
    env.push(("STOREBOX_UPDATES__PUBLIC_KEY".into(), p_.public_key.clone()));
    env.push(("STOREBOX_UPDATES__PROBATION_SECONDS".into(), "3".into()));
    env.push((
        "STOREBOX_TEST_CLOCK_FILE".into(),
        clock.display().to_string(),
    ));
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    StoreBox::start_with(&refs)
}

fn plan(version: &str) -> Value {
    json!({
        "version": version,
        "waves": [
            {"groups": ["pilot"], "min_success_percent": 100, "soak_minutes": 0},
            {"groups": ["canary"], "min_success_percent": 100, "soak_minutes": 0},
            {"all": true, "min_success_percent": 100, "soak_minutes": 0}
        ],
        "abort_failure_percent": 20,
        "store_timeout_minutes": 60,
        "urgent": true
    })
}

/// Test installer: waits for the store's install request for `version`, "installs" it and
/// restarts storebox on it.
async fn test_installer_installs(sb: &mut StoreBox, version: &str) {
    let request = updates_dir(sb).join("request.json");
    let req = eventually(60, "install request", || async {
        read_json(&request).filter(|r| r["action"] == "install")
    })
    .await;
    assert_eq!(req["version"], version);
    let old = updates(sb).await["running_version"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(&request).unwrap();
    sb.terminate();
    write_result(sb, "install", version, "installed", &old);
    sb.set_env("STOREBOX_TEST_RUNNING_VERSION", Some(version));
    sb.launch();
}

/// The `release.status` states HQ holds from `store`, in order.
async fn reported(hq: &Hq, store: &str) -> Vec<String> {
    let (_, v) = hq
        .get(&format!(
            "/hq/v1/store-events?store={store}&type=release.status&limit=1000"
        ))
        .await;
    v["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["payload"]["state"].as_str().map(str::to_string))
        .collect()
}

async fn rollout(hq: &Hq, id: &str) -> Value {
    let (s, v) = hq.get(&format!("/hq/v1/rollouts/{id}")).await;
    assert_eq!(s, 200, "{v}");
    v
}

/// The HQ-side state of `store` in the rollout (None: not assigned).
fn store_state(r: &Value, store: &str) -> Option<String> {
    r["waves"]
        .as_array()?
        .iter()
        .flat_map(|w| w["stores"].as_array().cloned().unwrap_or_default())
        .find(|s| s["store"] == store || s["id"] == store)
        .and_then(|s| s["state"].as_str().map(str::to_string))
}

fn nothing_assigned(v: &Value) -> bool {
    v["assigned"].is_null() && v["state"] == "idle"
}

const COMMITTED_PATH: [&str; 5] = [
    "downloading",
    "staged",
    "installing",
    "probation",
    "committed",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_release_rolls_out_through_hq_wave_by_wave_as_real_stores_commit() {
    let pb = setup();
    publish(&pb, "9.4.0").await;
    let mut pilot = start_store(&pb, "p1", "pilot");
    let mut canary = start_store(&pb, "c1", "canary");
    let mut other = start_store(&pb, "a1", "north");

    let (s, v) = pb.hq.post("/hq/v1/rollouts", plan("9.4.0")).await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();

    // Only the pilot is assigned; it installs and is in probation while canary has nothing.
    test_installer_installs(&mut pilot, "9.4.0").await;
    state_becomes(&pilot, "probation", 20).await;
    let c = updates(&canary).await;
    assert!(
        nothing_assigned(&c),
        "canary assigned before the pilot committed: {c}"
    );
    assert!(nothing_assigned(&updates(&other).await));
    assert!(reported(&pb.hq, "c1").await.is_empty());
    let r = rollout(&pb.hq, &id).await;
    assert_eq!(store_state(&r, "c1"), None, "{r}");

    // The pilot commits; HQ holds its sequence; only then the canary is assigned.
    state_becomes(&pilot, "committed", 30).await;
    eventually(20, "HQ holds p1's committed path", || async {
        (reported(&pb.hq, "p1").await == COMMITTED_PATH).then_some(())
    })
    .await;
    eventually(20, "HQ counts p1 committed", || async {
        let r = rollout(&pb.hq, &id).await;
        (store_state(&r, "p1").as_deref() == Some("committed")).then_some(())
    })
    .await;
    test_installer_installs(&mut canary, "9.4.0").await;
    state_becomes(&canary, "probation", 20).await;
    assert!(nothing_assigned(&updates(&other).await));
    state_becomes(&canary, "committed", 30).await;

    // Then the last wave ("all") and the rollout completes.
    test_installer_installs(&mut other, "9.4.0").await;
    state_becomes(&other, "committed", 30).await;
    let done = eventually(20, "rollout completes", || async {
        let r = rollout(&pb.hq, &id).await;
        (r["state"] == "completed").then_some(r)
    })
    .await;
    assert_eq!(done["counts"]["succeeded"], 3, "{done}");
    for s in ["p1", "c1", "a1"] {
        assert_eq!(
            store_state(&done, s).as_deref(),
            Some("committed"),
            "{done}"
        );
        assert_eq!(reported(&pb.hq, s).await, COMMITTED_PATH, "{s}");
    }
    for sb in [&pilot, &canary, &other] {
        assert_eq!(updates(sb).await["running_version"], "9.4.0");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pilot_whose_probation_fails_rolls_back_and_the_rollout_stops_there() {
    let pb = setup();
    publish(&pb, "9.5.0").await;
    let mut pilot = start_store(&pb, "p1", "pilot");
    let canary = start_store(&pb, "c1", "canary");
    let other = start_store(&pb, "a1", "north");
    let old = updates(&pilot).await["running_version"]
        .as_str()
        .unwrap()
        .to_string();

    let (s, v) = pb.hq.post("/hq/v1/rollouts", plan("9.5.0")).await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();

    test_installer_installs(&mut pilot, "9.5.0").await;
    state_becomes(&pilot, "probation", 20).await;
    // A crash during probation: the next start fails it and asks for a rollback.
    pilot.kill9();
    pilot.launch();
    state_becomes(&pilot, "failed", 20).await;
    let request = updates_dir(&pilot).join("request.json");
    let rb = eventually(10, "rollback request", || async { read_json(&request) }).await;
    assert_eq!(rb["action"], "rollback");
    std::fs::remove_file(&request).unwrap();
    pilot.terminate();
    write_result(&pilot, "rollback", "9.5.0", "rolled_back", &old);
    pilot.set_env("STOREBOX_TEST_RUNNING_VERSION", None);
    pilot.launch();
    state_becomes(&pilot, "rolled_back", 20).await;

    let aborted = eventually(20, "rollout aborts", || async {
        let r = rollout(&pb.hq, &id).await;
        (r["state"] == "aborted").then_some(r)
    })
    .await;
    // HQ may abort on the `failed` report already (a failed store counts as failed); the
    // `rolled_back` that follows still reaches the rollout's per-store state.
    eventually(20, "HQ shows p1 rolled_back in the rollout", || async {
        let r = rollout(&pb.hq, &id).await;
        (r["state"] == "aborted" && store_state(&r, "p1").as_deref() == Some("rolled_back"))
            .then_some(())
    })
    .await;
    assert_eq!(store_state(&aborted, "c1"), None, "{aborted}");
    assert_eq!(store_state(&aborted, "a1"), None, "{aborted}");
    assert_eq!(
        reported(&pb.hq, "p1").await,
        [
            "downloading",
            "staged",
            "installing",
            "probation",
            "failed",
            "rolled_back"
        ]
    );
    // A few ticks later still nobody else was assigned.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    for sb in [&canary, &other] {
        let v = updates(sb).await;
        assert!(nothing_assigned(&v), "assigned after the abort: {v}");
        assert!(!updates_dir(sb).join("request.json").exists());
    }
    assert!(reported(&pb.hq, "c1").await.is_empty());
    assert!(reported(&pb.hq, "a1").await.is_empty());
    assert_eq!(updates(&pilot).await["running_version"], old.as_str());
}

/// Files of a release in the store's updates directory (package, partial download, manifest).
fn release_files(sb: &StoreBox) -> Vec<String> {
    std::fs::read_dir(updates_dir(sb))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n.ends_with(".deb") || n.ends_with(".deb.part") || n.ends_with(".manifest.json")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Issue 15: a store assigned in the afternoon stages the release and waits for its night window;
/// the operator aborts the rollout; HQ's `release.withdraw` reaches the store, which reports
/// `refused` ("withdrawn by HQ: aborted by …"), removes the staged package and, once its window
/// opens, installs nothing (the test installer is never asked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_abort_withdraws_a_release_staged_and_waiting_for_the_window() {
    let pb = setup();
    publish(&pb, "9.6.0").await;
    let sb = start_store(&pb, "p1", "pilot");
    let clock = pb.tmp.path().join("clock-p1");
    set_clock(&clock, &day_at(2, "14:00"));

    let mut only_pilot = plan("9.6.0");
    only_pilot["waves"] =
        json!([{"groups": ["pilot"], "min_success_percent": 100, "soak_minutes": 0}]);
    let (s, v) = pb.hq.post("/hq/v1/rollouts", only_pilot).await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let waiting = state_becomes(&sb, "waiting_window", 30).await;
    assert!(waiting.to_string().contains("install window"), "{waiting}");
    assert!(
        release_files(&sb).iter().any(|f| f.ends_with(".deb")),
        "staged: {:?}",
        release_files(&sb)
    );
    eventually(20, "HQ sees p1 waiting for its window", || async {
        let r = rollout(&pb.hq, &id).await;
        (store_state(&r, "p1").as_deref() == Some("waiting_window")).then_some(())
    })
    .await;

    let (s, v) = pb
        .hq
        .post(&format!("/hq/v1/rollouts/{id}/abort"), json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    let refused = state_becomes(&sb, "refused", 20).await;
    assert!(
        refused.to_string().contains("withdrawn by HQ: aborted by"),
        "{refused}"
    );
    assert!(
        release_files(&sb).is_empty(),
        "the staged package is removed: {:?}",
        release_files(&sb)
    );
    eventually(20, "HQ holds p1's refused report", || async {
        let r = rollout(&pb.hq, &id).await;
        (store_state(&r, "p1").as_deref() == Some("refused")).then_some(r)
    })
    .await;
    assert_eq!(
        reported(&pb.hq, "p1").await,
        ["downloading", "staged", "waiting_window", "refused"]
    );

    // The night window opens: nothing is installed.
    set_clock(&clock, &day_at(3, "02:30"));
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let v = updates(&sb).await;
    assert_eq!(v["state"], "refused", "{v}");
    assert!(
        !updates_dir(&sb).join("request.json").exists(),
        "the test installer was asked to install a withdrawn release"
    );
    assert!(release_files(&sb).is_empty());
}
