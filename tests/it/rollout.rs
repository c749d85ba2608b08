//! HQ's side of releases against a real `storebox hq` process (SQLite and PostgreSQL): uploads
//! verified with the failed check named, downloads resumed with `Range`, and rollouts over three
//! groups where the "stores" are HTTP clients with real store tokens that read `release.assign`
//! from their feed and push `release.status` through `/sync/v1/events`.

use std::time::Duration;

use ed25519_dalek::SigningKey;
use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use storebox::proto::release::{public_key_text, Manifest, PackageFacts};

use crate::support::{eventually, Engine, Hq};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn package_bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut x: u32 = 0x2545_f491 ^ seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn manifest_for(k: &SigningKey, version: &str, bytes: &[u8], expires_in_days: i64) -> Manifest {
    let now = Timestamp::now();
    let issued = now - SignedDuration::from_hours(24 * 30);
    Manifest::sign(
        k,
        "storebox",
        version,
        &PackageFacts::of_bytes(bytes),
        "stable",
        now.as_millisecond() as u64,
        issued,
        now + SignedDuration::from_hours(24 * expires_in_days),
    )
    .unwrap()
}

pub(crate) fn start_hq(engine: Engine) -> Hq {
    let keys = format!(
        "[\"{}\", \"{}\"]",
        public_key_text(&key(9).verifying_key()),
        public_key_text(&key(7).verifying_key())
    );
    Hq::start_on(
        engine,
        &[
            ("STOREBOX_HQ_SERVER__RELEASE_PUBLIC_KEYS", keys.as_str()),
            ("STOREBOX_HQ_SERVER__ROLLOUT_TICK_SECONDS", "1"),
            ("STOREBOX_HQ_SERVER__MAX_RELEASE_BYTES", "4194304"),
        ],
    )
}

/// `POST /hq/v1/releases` with the given parts; (status, body).
async fn upload(hq: &Hq, package: &[u8], manifest: &str) -> (u16, Value) {
    let form = reqwest::multipart::Form::new()
        .part(
            "package",
            reqwest::multipart::Part::bytes(package.to_vec()).file_name("storebox.deb"),
        )
        .part(
            "manifest",
            reqwest::multipart::Part::text(manifest.to_string()).file_name("m.json"),
        );
    let r = reqwest::Client::new()
        .post(format!("{}/hq/v1/releases", hq.http))
        .bearer_auth(&hq.admin)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn refused_check(r: &(u16, Value), check: &str) {
    assert_eq!(r.0, 400, "{}", r.1);
    assert_eq!(r.1["error"]["code"], "invalid_release", "{}", r.1);
    let msg = r.1["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("check `{check}` failed")),
        "expected check {check}: {msg}"
    );
}

/// A simulated store: real token, reads its feed, pushes events.
struct Store {
    id: String,
    token: String,
    http: String,
    cursor: i64,
    seq: i64,
    client: reqwest::Client,
}

impl Store {
    fn new(hq: &Hq, id: &str, group: &str) -> Store {
        Store {
            id: id.into(),
            token: hq.add_store(id, group),
            http: hq.http.clone(),
            cursor: 0,
            seq: 0,
            client: reqwest::Client::new(),
        }
    }

    /// New `release.assign` payloads in the feed (long-polls up to `wait` seconds).
    async fn assigns(&mut self, wait: u64) -> Vec<Value> {
        let r: Value = self
            .client
            .get(format!(
                "{}/sync/v1/feed?after={}&wait={wait}",
                self.http, self.cursor
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        self.cursor = r["next"].as_i64().unwrap();
        r["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "release.assign")
            .map(|e| e["payload"].clone())
            .collect()
    }

    async fn status(&mut self, version: &str, state: &str, rollout: &str) {
        self.seq += 1;
        let body = json!({
            "report": {"version": "1.0.0", "cursor": self.cursor, "outbox_business": 0,
                       "outbox_telemetry": 0, "outbox_dropped": 0},
            "events": [{
                "seq": self.seq, "id": format!("{}-{}", self.id, self.seq),
                "type": "release.status", "class": "business",
                "payload": {"version": version, "state": state, "rollout": rollout,
                            "reason": format!("{state} (test store)")},
                "at": Timestamp::now().to_string(),
            }],
        });
        let r = self
            .client
            .post(format!("{}/sync/v1/events", self.http))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    }

    async fn get(&self, path: &str, range: Option<&str>) -> reqwest::Response {
        let mut req = self
            .client
            .get(format!("{}{path}", self.http))
            .bearer_auth(&self.token);
        if let Some(r) = range {
            req = req.header("range", r);
        }
        req.send().await.unwrap()
    }
}

/// Waits until `store` sees a `release.assign` in its feed.
async fn await_assign(store: &mut Store) -> Value {
    let what = format!("{} gets release.assign", store.id);
    for _ in 0..30 {
        if let Some(a) = store.assigns(1).await.into_iter().next() {
            return a;
        }
    }
    panic!("{what}")
}

/// Two ticks pass (tick = 1 s) and `store` has still not been assigned anything.
async fn assert_not_assigned(store: &mut Store) {
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let got = store.assigns(0).await;
    assert!(got.is_empty(), "{} was assigned: {got:?}", store.id);
}

async fn rollout_state(hq: &Hq, id: &str) -> Value {
    let (s, v) = hq.get(&format!("/hq/v1/rollouts/{id}")).await;
    assert_eq!(s, 200, "{v}");
    v
}

async fn uploads_and_downloads(engine: Engine) {
    let hq = start_hq(engine);
    let bytes = package_bytes(3 * 1024 * 1024 + 123, 1);
    let m = manifest_for(&key(7), "1.5.0", &bytes, 30);
    let good = serde_json::to_string_pretty(&m).unwrap();

    // Refusals, each naming its check.
    let mut flipped = bytes.clone();
    flipped[1_500_000] ^= 1;
    refused_check(&upload(&hq, &flipped, &good).await, "sha256");
    let other = serde_json::to_string(&manifest_for(&key(8), "1.5.0", &bytes, 30)).unwrap();
    refused_check(&upload(&hq, &bytes, &other).await, "key_id");
    let mut edited = m.clone();
    edited.channel = "beta".into();
    let edited = serde_json::to_string(&edited).unwrap();
    refused_check(&upload(&hq, &bytes, &edited).await, "signature");
    let expired = serde_json::to_string(&manifest_for(&key(7), "1.5.0", &bytes, -1)).unwrap();
    refused_check(&upload(&hq, &bytes, &expired).await, "expiry");
    refused_check(&upload(&hq, &bytes, "{\"name\": 1}").await, "manifest");
    let big = package_bytes(4 * 1024 * 1024 + 1, 2);
    let (s, v) = upload(&hq, &big, &good).await;
    assert_eq!((s, &v["error"]["code"]), (413, &json!("too_large")), "{v}");
    // Only the admin may publish.
    let r = reqwest::Client::new()
        .post(format!("{}/hq/v1/releases", hq.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (s, v) = hq.get("/hq/v1/releases").await;
    assert_eq!((s, v["releases"].as_array().unwrap().len()), (200, 0));

    // Accepted (signed by the second configured key), then idempotent.
    let (s, v) = upload(&hq, &bytes, &good).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["sha256"], m.sha256);
    assert_eq!(upload(&hq, &bytes, &good).await.0, 200);
    let other_bytes = package_bytes(1000, 3);
    let other_m = serde_json::to_string(&manifest_for(&key(7), "1.5.0", &other_bytes, 30)).unwrap();
    assert_eq!(upload(&hq, &other_bytes, &other_m).await.0, 409);
    let (_, v) = hq.get("/hq/v1/releases").await;
    let list = v["releases"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0]["version"].as_str(), list[0]["size"].as_u64()),
        (Some("1.5.0"), Some(bytes.len() as u64))
    );
    assert_eq!(list[0]["uploaded_by"], "admin token");

    // A store no rollout assigned gets 404, before and after a rollout that is not for it.
    let mut p1 = Store::new(&hq, "p1", "pilot");
    let mut x1 = Store::new(&hq, "x1", "other");
    let path = "/sync/v1/releases/1.5.0/package";
    assert_eq!(p1.get(path, None).await.status().as_u16(), 404);
    let (s, v) = hq
        .post(
            "/hq/v1/rollouts",
            json!({"version": "1.5.0", "waves": [{"groups": ["pilot"], "min_success_percent": 100,
                   "soak_minutes": 0}], "abort_failure_percent": 0, "store_timeout_minutes": 60,
                   "urgent": true}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let a = await_assign(&mut p1).await;
    assert_eq!(a["package"], path);
    assert_eq!(a["manifest"], serde_json::to_value(&m).unwrap());
    let r = x1.get(path, None).await;
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "unknown_release"
    );
    assert!(x1.assigns(0).await.is_empty());

    // Resumed download: the first 1,000,000 bytes, then the rest from there.
    let r = p1.get(path, Some("bytes=0-999999")).await;
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 0-999999/{}", bytes.len()).as_str()
    );
    let mut got = r.bytes().await.unwrap().to_vec();
    assert_eq!(got.len(), 1_000_000);
    let r = p1.get(path, Some(&format!("bytes={}-", got.len()))).await;
    assert_eq!(r.status().as_u16(), 206);
    got.extend_from_slice(&r.bytes().await.unwrap());
    assert_eq!(hex::encode(Sha256::digest(&got)), m.sha256);
    let r = p1.get(path, None).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(r.bytes().await.unwrap().len(), bytes.len());
    let r = p1.get(path, Some(&format!("bytes={}-", bytes.len()))).await;
    assert_eq!(r.status().as_u16(), 416);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes */{}", bytes.len()).as_str()
    );
    let r = p1.get("/sync/v1/releases/1.5.0/manifest", None).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Manifest>().await.unwrap(), m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_verified_and_downloads_resume_sqlite() {
    uploads_and_downloads(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_verified_and_downloads_resume_postgres() {
    uploads_and_downloads(Engine::Postgres).await;
}

pub(crate) fn plan(version: &str) -> Value {
    json!({
        "version": version,
        "waves": [
            {"groups": ["pilot"], "min_success_percent": 100, "soak_minutes": 0},
            {"groups": ["canary"], "min_success_percent": 100, "soak_minutes": 0},
            {"all": true, "min_success_percent": 100, "soak_minutes": 0}
        ],
        "abort_failure_percent": 20,
        "store_timeout_minutes": 60,
        "urgent": false
    })
}

pub(crate) async fn publish(hq: &Hq, version: &str, seed: u32) {
    let bytes = package_bytes(20_000, seed);
    let m = serde_json::to_string(&manifest_for(&key(7), version, &bytes, 30)).unwrap();
    let (s, v) = upload(hq, &bytes, &m).await;
    assert_eq!(s, 201, "{v}");
}

async fn three_group_rollouts(engine: Engine) {
    let hq = start_hq(engine);
    publish(&hq, "2.0.0", 10).await;
    publish(&hq, "2.1.0", 11).await;
    let mut p1 = Store::new(&hq, "p1", "pilot");
    let mut canary = [
        Store::new(&hq, "c1", "canary"),
        Store::new(&hq, "c2", "canary"),
    ];
    let mut rest = [
        Store::new(&hq, "a1", ""),
        Store::new(&hq, "a2", "north"),
        Store::new(&hq, "a3", "south"),
    ];

    // Refused plans name the field.
    let mut bad = plan("9.9.9");
    let (s, v) = hq.post("/hq/v1/rollouts", bad.clone()).await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (400, &json!("invalid_rollout")),
        "{v}"
    );
    bad["version"] = json!("2.0.0");
    bad["waves"][1]["min_success_percent"] = json!(101);
    let (s, v) = hq.post("/hq/v1/rollouts", bad).await;
    assert!(
        s == 400 && v["error"]["message"].as_str().unwrap().contains("waves[1]"),
        "{v}"
    );

    // A good version: each wave opens only once the one before has committed.
    let (s, v) = hq.post("/hq/v1/rollouts", plan("2.0.0")).await;
    assert_eq!(s, 201, "{v}");
    let r1 = v["id"].as_str().unwrap().to_string();
    let a = await_assign(&mut p1).await;
    assert_eq!(
        (a["version"].as_str(), a["rollout"].as_str()),
        (Some("2.0.0"), Some(r1.as_str()))
    );
    for st in ["downloading", "staged", "installing", "probation"] {
        p1.status("2.0.0", st, &r1).await;
    }
    assert_not_assigned(&mut canary[0]).await;
    let v = rollout_state(&hq, &r1).await;
    assert_eq!(v["waves"][0]["stores"][0]["state"], "probation", "{v}");
    assert_eq!(v["waves"][0]["stores"][0]["attempts"], 1);
    p1.status("2.0.0", "committed", &r1).await;
    for c in canary.iter_mut() {
        await_assign(c).await;
    }
    canary[0].status("2.0.0", "committed", &r1).await;
    assert_not_assigned(&mut rest[0]).await;
    canary[1].status("2.0.0", "committed", &r1).await;
    for s in rest.iter_mut() {
        await_assign(s).await;
        s.status("2.0.0", "committed", &r1).await;
    }
    let done = eventually(10, "rollout 1 completes", || async {
        let v = rollout_state(&hq, &r1).await;
        (v["state"] == "completed").then_some(v)
    })
    .await;
    assert_eq!(done["counts"]["succeeded"], 6, "{done}");

    // A bad version: the pilot commits, a canary rolls back after probation (1 of 3 assigned,
    // above 20 %): the rollout aborts before the last wave, which is never assigned.
    let (s, v) = hq.post("/hq/v1/rollouts", plan("2.1.0")).await;
    assert_eq!(s, 201, "{v}");
    let r2 = v["id"].as_str().unwrap().to_string();
    await_assign(&mut p1).await;
    p1.status("2.1.0", "committed", &r2).await;
    for c in canary.iter_mut() {
        await_assign(c).await;
    }
    canary[0].status("2.1.0", "probation", &r2).await;
    canary[0].status("2.1.0", "rolled_back", &r2).await;
    let aborted = eventually(10, "rollout 2 aborts", || async {
        let v = rollout_state(&hq, &r2).await;
        (v["state"] == "aborted").then_some(v)
    })
    .await;
    assert!(
        aborted["reason"].as_str().unwrap().contains("1 of 3"),
        "{aborted}"
    );
    assert_eq!(aborted["waves"][1]["stores"][0]["state"], "rolled_back");
    canary[1].status("2.1.0", "committed", &r2).await;
    for s in rest.iter_mut() {
        assert_not_assigned(s).await;
        let r = s.get("/sync/v1/releases/2.1.0/package", None).await;
        assert_eq!(r.status().as_u16(), 404, "{} may not download 2.1.0", s.id);
    }
    let (s, v) = hq
        .post(&format!("/hq/v1/rollouts/{r2}/resume"), json!({}))
        .await;
    assert_eq!(s, 409, "an aborted rollout stays aborted: {v}");
    let (_, v) = hq.get("/hq/v1/rollouts").await;
    let states: Vec<&str> = v["rollouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["aborted", "completed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_group_rollout_advances_on_commits_and_aborts_on_rollback_sqlite() {
    three_group_rollouts(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_group_rollout_advances_on_commits_and_aborts_on_rollback_postgres() {
    three_group_rollouts(Engine::Postgres).await;
}

/// `storebox check-config` names a bad `release_public_keys` entry by its index.
#[test]
fn check_config_names_a_bad_release_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = public_key_text(&key(7).verifying_key());
    let run = |keys: String| {
        std::process::Command::new(crate::support::BIN)
            .arg("check-config")
            .envs(crate::support::base_env(dir.path()))
            .env("STOREBOX_HQ_SERVER__RELEASE_PUBLIC_KEYS", keys)
            .output()
            .unwrap()
    };
    let ok = run(format!("[\"{good}\"]"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = run(format!("[\"{good}\", \"ed25519:AAAA\"]"));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        err.contains("hq_server.release_public_keys") && err.contains("entry 1"),
        "{err}"
    );
}

/// Two HQ nodes on one PostgreSQL database: a release published and a rollout started on one node;
/// the stores talk only to the other, which serves the package from the database and whose
/// rollout engine reacts to their reports. Nothing a store needs is node-local.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_spans_two_hq_nodes_on_postgres() {
    let a = start_hq(Engine::Postgres);
    let b = a.another_node();
    let bytes = package_bytes(2 * 1024 * 1024 + 5, 21);
    let m = manifest_for(&key(7), "3.0.0", &bytes, 30);
    let (s, v) = upload(&a, &bytes, &serde_json::to_string(&m).unwrap()).await;
    assert_eq!(s, 201, "{v}");
    let mut p1 = Store::new(&a, "p1", "pilot");
    let mut c1 = Store::new(&a, "c1", "canary");
    p1.http = b.http.clone();
    c1.http = b.http.clone();
    let (s, v) = a.post("/hq/v1/rollouts", plan("3.0.0")).await;
    assert_eq!(s, 201, "{v}");
    let r = v["id"].as_str().unwrap().to_string();
    let assign = await_assign(&mut p1).await;
    let got = p1
        .get(assign["package"].as_str().unwrap(), Some("bytes=1048570-"))
        .await;
    assert_eq!(got.status().as_u16(), 206);
    let tail = got.bytes().await.unwrap();
    assert_eq!(&tail[..], &bytes[1_048_570..], "node b serves a's upload");
    p1.status("3.0.0", "committed", &r).await;
    await_assign(&mut c1).await;
    c1.status("3.0.0", "rolled_back", &r).await;
    let v = eventually(10, "the rollout aborts", || async {
        let v = rollout_state(&a, &r).await;
        (v["state"] == "aborted").then_some(v)
    })
    .await;
    assert_eq!(v["counts"]["failed"], 1, "{v}");
}

fn add_user(hq: &Hq, name: &str, role: &str, password: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new(crate::support::BIN)
        .args([
            "hq",
            "user",
            "add",
            name,
            "--role",
            role,
            "--password-stdin",
        ])
        .envs(hq.env_for_cli())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
}

/// A signed-in console user: (client with the session cookie, CSRF token).
async fn signed_in(hq: &Hq, name: &str, password: &str) -> (reqwest::Client, String) {
    let c = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let me: Value = c
        .post(format!("{}/hq/v1/session", hq.http))
        .json(&json!({"name": name, "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (c, me["csrf"].as_str().unwrap().to_string())
}

/// Only an admin publishes; operators start and steer rollouts; support only reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_publish_steer_and_read() {
    let hq = start_hq(Engine::Sqlite);
    add_user(&hq, "olga", "operator", "operator-password-1");
    add_user(&hq, "sam", "support", "support-password-1");
    let (olga, olga_csrf) = signed_in(&hq, "olga", "operator-password-1").await;
    let (sam, sam_csrf) = signed_in(&hq, "sam", "support-password-1").await;
    let bytes = package_bytes(5000, 31);
    let m = serde_json::to_string(&manifest_for(&key(7), "4.0.0", &bytes, 30)).unwrap();
    let form = || {
        reqwest::multipart::Form::new()
            .part("package", reqwest::multipart::Part::bytes(bytes.clone()))
            .part("manifest", reqwest::multipart::Part::text(m.clone()))
    };
    let r = olga
        .post(format!("{}/hq/v1/releases", hq.http))
        .header("x-csrf-token", &olga_csrf)
        .multipart(form())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "an operator may not publish");
    assert_eq!(upload(&hq, &bytes, &m).await.0, 201);
    let post = |c: &reqwest::Client, csrf: &str, path: &str, body: Value| {
        c.post(format!("{}{path}", hq.http))
            .header("x-csrf-token", csrf)
            .json(&body)
            .send()
    };
    let r = post(&olga, &olga_csrf, "/hq/v1/rollouts", plan("4.0.0"))
        .await
        .unwrap();
    let v = r.json::<Value>().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("group \"pilot\" has no registered store"),
        "a wave of nobody would pass at once: {v}"
    );
    hq.add_store("p1", "pilot");
    hq.add_store("c1", "canary");
    let r = post(&sam, &sam_csrf, "/hq/v1/rollouts", plan("4.0.0"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "support may not start rollouts");
    let r = post(&olga, &olga_csrf, "/hq/v1/rollouts", plan("4.0.0"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = post(
        &sam,
        &sam_csrf,
        &format!("/hq/v1/rollouts/{id}/pause"),
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = post(
        &olga,
        &olga_csrf,
        &format!("/hq/v1/rollouts/{id}/pause"),
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["state"], "paused");
    for path in [
        "/hq/v1/releases",
        "/hq/v1/rollouts",
        &format!("/hq/v1/rollouts/{id}"),
    ] {
        let r = sam.get(format!("{}{path}", hq.http)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "support reads {path}");
    }
    let v: Value = sam
        .get(format!("{}/hq/v1/rollouts/{id}", hq.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["reason"], "paused by olga", "{v}");
}
