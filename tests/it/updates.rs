//! The store's self-update end to end (issue 15, docs/releases.md "The store"): a real `storebox
//! hq` authors `release.assign` (through `POST /hq/v1/events` with a store target), a real
//! `storebox serve` downloads, verifies, stages, waits for its window and writes the install
//! request; `release.status` events reach HQ's `/hq/v1/store-events`.
//!
//! Two stand-ins, named as such:
//! - **package stand-in**: a small HTTP server in front of HQ serves `/sync/v1/releases/…` itself
//!   (checking the store token, honouring `Range`, able to stall mid-body) and forwards every other
//!   request to the real HQ. It stays because these tests stall a download mid-body and record the
//!   `Range` headers, which the real HQ cannot be made to do; the path through HQ's own upload,
//!   rollout and download is tests/it/release_e2e.rs. The store's `[hq] url`
//!   is this server, so the package still comes from "the HQ URL" (the allow-list holds).
//! - **test installer**: the test plays the root helper: it reads `request.json`, removes it,
//!   writes `result.json` and restarts the serve process, the "new version" being the same
//!   binary told its version by the debug-only `STOREBOX_TEST_RUNNING_VERSION`.
//!
//! Store time is driven by the debug-only test clock (`STOREBOX_TEST_CLOCK_FILE`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use ed25519_dalek::SigningKey;
use futures_util::StreamExt as _;
use parking_lot::Mutex;
use serde_json::{json, Value};
use storebox::proto::release::{public_key_text, Manifest, PackageFacts};

use crate::support::{eventually, Hq, StoreBox};

const STORE: &str = "s1";

/// Package stand-in in front of a real HQ (see the module doc).
struct PackageStandIn {
    url: String,
    shared: Arc<Shared>,
}

struct Shared {
    hq: String,
    token: String,
    client: reqwest::Client,
    st: Mutex<Packages>,
}

#[derive(Default)]
struct Packages {
    files: HashMap<String, Vec<u8>>,
    /// Send only up to this byte of a package, then hold the connection open without sending.
    stall_after: Option<usize>,
    /// The `Range` header of each package request (None: no header).
    ranges: Vec<Option<String>>,
}

impl PackageStandIn {
    async fn start(hq: &Hq, token: &str) -> PackageStandIn {
        let shared = Arc::new(Shared {
            hq: hq.http.clone(),
            token: token.to_string(),
            client: reqwest::Client::builder().no_gzip().build().unwrap(),
            st: Mutex::new(Packages::default()),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        PackageStandIn { url, shared }
    }

    fn put(&self, path: &str, bytes: Vec<u8>) {
        self.shared.st.lock().files.insert(path.into(), bytes);
    }

    fn stall_after(&self, n: Option<usize>) {
        self.shared.st.lock().stall_after = n;
    }

    fn ranges(&self) -> Vec<Option<String>> {
        self.shared.st.lock().ranges.clone()
    }
}

async fn handle(State(s): State<Arc<Shared>>, req: Request) -> Response {
    if req.uri().path().starts_with("/sync/v1/releases/") {
        return serve_package(&s, &req);
    }
    let url = format!(
        "{}{}",
        s.hq,
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let method = req.method().clone();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    let mut rb = s.client.request(method, url).body(body);
    for (k, v) in headers.iter() {
        if k != header::HOST && k != header::CONTENT_LENGTH {
            rb = rb.header(k, v);
        }
    }
    let Ok(r) = rb.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = r.status();
    let hdrs = r.headers().clone();
    let bytes = r.bytes().await.unwrap_or_default();
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    for (k, v) in hdrs.iter() {
        if k != header::TRANSFER_ENCODING && k != header::CONNECTION && k != header::CONTENT_LENGTH
        {
            resp.headers_mut().append(k, v.clone());
        }
    }
    resp
}

fn serve_package(s: &Shared, req: &Request) -> Response {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {}", s.token) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut st = s.st.lock();
    st.ranges.push(range.clone());
    let Some(pkg) = st.files.get(req.uri().path()).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let from = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    if from >= pkg.len() {
        return StatusCode::RANGE_NOT_SATISFIABLE.into_response();
    }
    let len = pkg.len();
    let rest = pkg[from..].to_vec();
    let body = match st.stall_after {
        Some(stall) if stall > from && stall < len => {
            let first = Bytes::from(pkg[from..stall].to_vec());
            let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) })
                .chain(futures_util::stream::pending());
            Body::from_stream(stream)
        }
        _ => Body::from(rest),
    };
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_LENGTH,
        (len - from).to_string().parse().unwrap(),
    );
    if range.is_some() {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        resp.headers_mut().insert(
            header::CONTENT_RANGE,
            format!("bytes {from}-{}/{len}", len - 1).parse().unwrap(),
        );
    }
    resp
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

fn package(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 * 31 + seed as u64 * 7 % 251) as u8)
        .collect()
}

fn manifest(version: &str, bytes: &[u8], serial: u64) -> Manifest {
    let now = jiff::Timestamp::now();
    Manifest::sign(
        &key(),
        "storebox",
        version,
        &PackageFacts::of_bytes(bytes),
        "stable",
        serial,
        now,
        now.checked_add(jiff::SignedDuration::from_hours(24 * 30))
            .unwrap(),
    )
    .unwrap()
}

fn assign(version: &str, rollout: &str, m: &Manifest, path: &str) -> Value {
    json!([{"type": "release.assign", "payload": {
        "version": version, "rollout": rollout, "manifest": m, "package": path,
    }}])
}

/// An instant `days` after today (UTC) at `hh:mm`.
pub(crate) fn day_at(days: i64, hhmm: &str) -> String {
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    format!(
        "{}T{hhmm}:00Z",
        today.checked_add(jiff::Span::new().days(days)).unwrap()
    )
}

/// Sets the store's test clock (it runs on from there in real time).
pub(crate) fn set_clock(file: &Path, at: &str) {
    std::fs::write(file, at).unwrap();
}

fn start_store(
    hq: &Hq,
    standin: &PackageStandIn,
    token: &str,
    clock: &Path,
    probation_secs: &str,
) -> StoreBox {
    let mut env = hq.store_env(STORE, token);
    env.retain(|(k, _)| k != "STOREBOX_HQ__URL");
    env.push(("STOREBOX_HQ__URL".into(), standin.url.clone()));
    env.push((
        "STOREBOX_UPDATES__PUBLIC_KEY".into(),
        public_key_text(&key().verifying_key()),
    ));
    env.push((
        "STOREBOX_UPDATES__PROBATION_SECONDS".into(),
        probation_secs.into(),
    ));
    env.push((
        "STOREBOX_TEST_CLOCK_FILE".into(),
        clock.display().to_string(),
    ));
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    StoreBox::start_with(&refs)
}

pub(crate) async fn updates(sb: &StoreBox) -> Value {
    let (s, v) = sb.get("/api/v1/updates").await;
    assert_eq!(s, 200, "{v}");
    v
}

pub(crate) async fn state_becomes(sb: &StoreBox, state: &str, secs: u64) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let v = updates(sb).await;
        if v["state"] == state {
            return v;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "timed out after {secs} s waiting for update state {state}; last answer {v}\nstderr:\n{}",
                sb.stderr()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The `release.status` events HQ holds from the store, in order.
async fn reported(hq: &Hq) -> Vec<Value> {
    let (_, v) = hq
        .get(&format!(
            "/hq/v1/store-events?store={STORE}&type=release.status&limit=1000"
        ))
        .await;
    v["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e["payload"].clone())
        .collect()
}

async fn reported_states_end_with(hq: &Hq, want: &[&str], secs: u64) -> Vec<Value> {
    eventually(
        secs,
        &format!("HQ holds release.status … {want:?}"),
        || async {
            let events = reported(hq).await;
            let states: Vec<&str> = events.iter().filter_map(|e| e["state"].as_str()).collect();
            states.ends_with(want).then_some(events.clone())
        },
    )
    .await
}

pub(crate) fn updates_dir(sb: &StoreBox) -> PathBuf {
    sb.dir.join("updates")
}

pub(crate) fn read_json(p: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(p).ok()?).ok()
}

/// The test installer's answer: `result.json` as the root helper writes it.
pub(crate) fn write_result(
    sb: &StoreBox,
    action: &str,
    version: &str,
    outcome: &str,
    previous: &str,
) {
    let r = json!({"action": action, "version": version, "outcome": outcome, "reason": "",
        "previous_version": previous, "finished_at": "2026-01-01T00:00:00Z"});
    let dir = updates_dir(sb);
    std::fs::write(dir.join(".result.json.tmp"), r.to_string()).unwrap();
    std::fs::rename(dir.join(".result.json.tmp"), dir.join("result.json")).unwrap();
}

/// Assign → download (the store is killed mid-download and resumes with `Range` from where the
/// `.part` was) → verify → staged → waiting_window outside the window → install request inside
/// it → (test installer) → probation → committed, reported to HQ in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assigned_release_is_downloaded_resumed_staged_installed_in_the_window_and_committed() {
    let hq = Hq::start();
    let token = hq.add_store(STORE, "pilot");
    let standin = PackageStandIn::start(&hq, &token).await;
    let tmp = tempfile::tempdir().unwrap();
    let clock = tmp.path().join("clock");
    set_clock(&clock, &day_at(1, "12:00"));
    let mut sb = start_store(&hq, &standin, &token, &clock, "3");
    let v = updates(&sb).await;
    assert_eq!(v["state"], "idle");
    assert_eq!(v["enabled"], true, "{v}");
    let old_version = v["running_version"].as_str().unwrap().to_string();

    let pkg = package(1, 300_000);
    let path = "/sync/v1/releases/9.1.0/package";
    standin.put(path, pkg.clone());
    standin.stall_after(Some(100_000));
    let m = manifest("9.1.0", &pkg, 100);
    hq.author(json!({"stores": [STORE]}), assign("9.1.0", "r-1", &m, path))
        .await;

    // The download stalls at 100 000 bytes: the .part holds them; kill the store there.
    let part = updates_dir(&sb).join("9.1.0.deb.part");
    eventually(30, ".part holds the first 100 000 bytes", || async {
        (std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) == 100_000).then_some(())
    })
    .await;
    assert_eq!(updates(&sb).await["state"], "downloading");
    sb.kill9();
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 100_000);
    standin.stall_after(None);
    sb.launch();

    let v = state_becomes(&sb, "waiting_window", 30).await;
    let ranges = standin.ranges();
    assert_eq!(
        ranges.first(),
        Some(&None),
        "first request from byte 0: {ranges:?}"
    );
    assert_eq!(
        ranges.last(),
        Some(&Some("bytes=100000-".to_string())),
        "resumed from the .part's length: {ranges:?}"
    );
    assert!(!part.exists(), "the .part became the staged package");
    let staged = updates_dir(&sb).join("9.1.0.deb");
    assert_eq!(
        std::fs::read(&staged).unwrap(),
        pkg,
        "staged bytes are the package"
    );
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("outside the install window 02:00-05:00"),
        "{v}"
    );
    assert_eq!(v["assigned"]["version"], "9.1.0");
    assert_eq!(v["assigned"]["serial"], 100);
    assert_eq!(v["next_install_at"], day_at(2, "02:00"), "{v}");
    assert!(!updates_dir(&sb).join("request.json").exists());

    // Inside the window: the install request is written.
    set_clock(&clock, &day_at(2, "02:30"));
    let request = updates_dir(&sb).join("request.json");
    let req = eventually(20, "request.json written inside the window", || async {
        read_json(&request)
    })
    .await;
    assert_eq!(req["action"], "install");
    assert_eq!(req["version"], "9.1.0");
    assert_eq!(req["serial"], 100);
    assert_eq!(req["rollout"], "r-1");
    assert_eq!(req["probation_seconds"], 3);
    assert_eq!(
        std::fs::read(req["package"].as_str().unwrap()).unwrap(),
        pkg,
        "the request names the staged package by absolute path"
    );
    let staged_manifest = read_json(Path::new(req["manifest"].as_str().unwrap())).unwrap();
    assert_eq!(staged_manifest, serde_json::to_value(&m).unwrap());
    assert_eq!(updates(&sb).await["state"], "installing");

    // Test installer: takes the request, "installs" 9.1.0 and restarts storebox on it.
    std::fs::remove_file(&request).unwrap();
    sb.terminate();
    write_result(&sb, "install", "9.1.0", "installed", &old_version);
    sb.set_env("STOREBOX_TEST_RUNNING_VERSION", Some("9.1.0"));
    sb.launch();
    let v = updates(&sb).await;
    assert_eq!(v["running_version"], "9.1.0");
    let v = state_becomes(&sb, "committed", 30).await;
    assert_eq!(v["last_committed_serial"], 100);
    assert!(!updates_dir(&sb).join("result.json").exists());
    assert!(!staged.exists(), "committed: the staged package is removed");
    let states: Vec<String> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|h| h["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        states,
        [
            "downloading",
            "staged",
            "waiting_window",
            "installing",
            "probation",
            "committed"
        ]
    );

    let events = reported_states_end_with(
        &hq,
        &[
            "downloading",
            "staged",
            "waiting_window",
            "installing",
            "probation",
            "committed",
        ],
        30,
    )
    .await;
    assert_eq!(events.len(), 6, "{events:?}");
    for e in &events {
        assert_eq!(
            (
                e["version"].as_str(),
                e["rollout"].as_str(),
                e["serial"].as_u64()
            ),
            (Some("9.1.0"), Some("r-1"), Some(100)),
            "{e}"
        );
    }
}

/// A tampered package is refused naming sha256 (no request written); a probation that fails (a
/// restart during it) reports `failed`, asks for a rollback, and after the test installer's
/// `rolled_back` the store reports `rolled_back` and refuses the same serial when reassigned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_package_is_refused_and_a_failed_probation_rolls_back_for_good() {
    let hq = Hq::start();
    let token = hq.add_store(STORE, "pilot");
    let standin = PackageStandIn::start(&hq, &token).await;
    let tmp = tempfile::tempdir().unwrap();
    let clock = tmp.path().join("clock");
    // Inside the window from the start.
    set_clock(&clock, &day_at(2, "02:30"));
    let mut sb = start_store(&hq, &standin, &token, &clock, "60");
    let old_version = updates(&sb).await["running_version"]
        .as_str()
        .unwrap()
        .to_string();

    // Tampered: one byte differs from what the manifest signed.
    let good = package(2, 50_000);
    let m = manifest("9.0.9", &good, 200);
    let mut bad = good.clone();
    bad[1234] ^= 1;
    let path = "/sync/v1/releases/9.0.9/package";
    standin.put(path, bad);
    hq.author(json!({"stores": [STORE]}), assign("9.0.9", "r-t", &m, path))
        .await;
    let v = state_becomes(&sb, "refused", 30).await;
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("check `sha256` failed"),
        "{v}"
    );
    let dir = updates_dir(&sb);
    assert!(!dir.join("request.json").exists());
    assert!(!dir.join("9.0.9.deb").exists() && !dir.join("9.0.9.deb.part").exists());
    let events = reported_states_end_with(&hq, &["downloading", "refused"], 30).await;
    assert!(events[1]["reason"].as_str().unwrap().contains("sha256"));

    // A good release installs at once (inside the window) ...
    let pkg = package(3, 80_000);
    let m = manifest("9.2.0", &pkg, 201);
    let path = "/sync/v1/releases/9.2.0/package";
    standin.put(path, pkg);
    let assignment = assign("9.2.0", "r-2", &m, path);
    hq.author(json!({"stores": [STORE]}), assignment.clone())
        .await;
    let request = dir.join("request.json");
    eventually(30, "install request", || async {
        read_json(&request).filter(|r| r["action"] == "install")
    })
    .await;
    std::fs::remove_file(&request).unwrap();
    sb.terminate();
    write_result(&sb, "install", "9.2.0", "installed", &old_version);
    sb.set_env("STOREBOX_TEST_RUNNING_VERSION", Some("9.2.0"));
    sb.launch();
    state_becomes(&sb, "probation", 20).await;

    // ... and then crashes during probation: the next start fails it and asks for a rollback.
    sb.kill9();
    sb.launch();
    let v = state_becomes(&sb, "failed", 20).await;
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("storebox restarted during probation (start 2)"),
        "{v}"
    );
    assert_eq!(v["rolling_back"], true);
    let rb = eventually(10, "rollback request", || async { read_json(&request) }).await;
    assert_eq!(rb["action"], "rollback");
    assert_eq!(rb["version"], "9.2.0");

    // Test installer: restores the previous version and restarts storebox on it.
    std::fs::remove_file(&request).unwrap();
    sb.terminate();
    write_result(&sb, "rollback", "9.2.0", "rolled_back", &old_version);
    sb.set_env("STOREBOX_TEST_RUNNING_VERSION", None);
    sb.launch();
    let v = state_becomes(&sb, "rolled_back", 20).await;
    assert_eq!(v["running_version"], old_version.as_str());
    assert!(v["reason"].as_str().unwrap().contains(&old_version), "{v}");
    assert!(!dir.join("result.json").exists());

    // The same serial again is refused; nothing is downloaded or requested.
    let before = standin.ranges().len();
    hq.author(json!({"stores": [STORE]}), assignment).await;
    let v = state_becomes(&sb, "refused", 20).await;
    assert!(
        v["reason"].as_str().unwrap().contains("rolled back here"),
        "{v}"
    );
    assert_eq!(standin.ranges().len(), before);
    assert!(!request.exists());
    let events = reported_states_end_with(
        &hq,
        &[
            "downloading",
            "staged",
            "installing",
            "probation",
            "failed",
            "rolled_back",
            "refused",
        ],
        30,
    )
    .await;
    let n = events.len();
    assert_eq!(events[n - 1]["serial"], 201);
    assert_eq!(events[n - 2]["rollout"], "r-2");
}

/// No install starts while a checkout is being recorded: the test holds the store database's
/// write lock so that a checkout stays in flight (it holds its sale guard while it waits for the
/// lock), opens the window meanwhile, and sees `waiting_window` "a sale is in flight" before
/// `installing`, once the checkout was recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_does_not_start_while_a_checkout_is_being_recorded() {
    let hq = Hq::start();
    let token = hq.add_store(STORE, "pilot");
    let standin = PackageStandIn::start(&hq, &token).await;
    let tmp = tempfile::tempdir().unwrap();
    let clock = tmp.path().join("clock");
    set_clock(&clock, &day_at(1, "12:00"));
    let sb = start_store(&hq, &standin, &token, &clock, "60");
    let catalog = sb.dir.join("catalog.jsonl");
    std::fs::write(
        &catalog,
        "{\"type\":\"catalog.upsert\",\"payload\":{\"sku\":\"1001\",\"name\":\"Milk\",\"unit\":\"each\",\"department\":\"dairy\"}}\n\
         {\"type\":\"price.set\",\"payload\":{\"id\":\"pr-1\",\"sku\":\"1001\",\"price\":129,\"starts_at\":\"2020-01-01T00:00:00Z\",\"ends_at\":null}}\n",
    )
    .unwrap();
    let (s, out, err) = sb.cli(&["import", catalog.to_str().unwrap()]);
    assert!(s.success(), "{out}{err}");

    let pkg = package(4, 20_000);
    let m = manifest("9.3.0", &pkg, 300);
    let path = "/sync/v1/releases/9.3.0/package";
    standin.put(path, pkg);
    hq.author(json!({"stores": [STORE]}), assign("9.3.0", "r-3", &m, path))
        .await;
    state_becomes(&sb, "waiting_window", 30).await;

    // Hold the write lock (readers go on: WAL), so a checkout waits inside its recording.
    let lock = sb.db();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let client = sb.client();
    let url = format!("{}/api/v1/checkouts", sb.http);
    let bearer = sb.token.clone();
    let checkout = tokio::spawn(async move {
        client
            .post(url)
            .bearer_auth(bearer)
            .json(&json!({"checkout_id": "lane1-0001", "lane": "lane-1",
                "lines": [{"sku": "1001", "quantity": 1}], "payment": {"method": "card"}}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    // The lock is held about 2 s in all: well inside the checkout's 5 s busy timeout also on a
    // loaded machine, and long enough for the updater (which looks every second) to see the
    // window open while the sale is in flight.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    set_clock(&clock, &day_at(2, "02:30"));
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    let request = updates_dir(&sb).join("request.json");
    assert!(
        !request.exists(),
        "no install request while the checkout is in flight"
    );
    assert!(
        !checkout.is_finished(),
        "the checkout is still being recorded"
    );
    lock.execute_batch("COMMIT").unwrap();
    assert_eq!(checkout.await.unwrap(), 201);

    let v = state_becomes(&sb, "installing", 20).await;
    assert!(request.exists());
    let changes: Vec<(String, String)> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|h| {
            (
                h["state"].as_str().unwrap().to_string(),
                h["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let n = changes.len();
    assert_eq!(
        changes[n - 2..],
        [
            (
                "waiting_window".to_string(),
                "a sale is in flight".to_string()
            ),
            ("installing".to_string(), String::new())
        ],
        "{changes:?}"
    );
}
