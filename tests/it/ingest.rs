//! Device ingest under load and failure (issue 17): a QoS 1 message the broker acknowledged is
//! stored, whatever the writer's speed; a writer that cannot write stops the acknowledgements and
//! catches up by itself; a long-running task that dies ends the process.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;

use crate::support::*;

const DEVICES: usize = 50;
const PER_DEVICE: usize = 2_000;
/// One message in this many is an alert (raised with a code of its own).
const ALERT_EVERY: usize = 100;

async fn provision(sb: &StoreBox, id: &str) -> String {
    let (code, body) = sb
        .post("/api/v1/devices", json!({"id": id, "kind": "fridge"}))
        .await;
    assert_eq!(code, 201, "{body}");
    body["password"].as_str().unwrap().to_string()
}

/// Publishes `PER_DEVICE` QoS 1 messages as fast as the broker takes them (alerts among the
/// telemetry) and returns how many PUBACKs came back.
async fn burst(port: u16, id: String, password: String) -> usize {
    let mut opts = MqttOptions::new(&id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_credentials(&id, &password);
    let (client, mut eventloop) = AsyncClient::new(opts, 200);
    let publisher = tokio::spawn({
        let id = id.clone();
        async move {
            for n in 0..PER_DEVICE {
                let (topic, payload) = if n % ALERT_EVERY == ALERT_EVERY - 1 {
                    (
                        format!("devices/{id}/alerts"),
                        json!({"code": format!("BURST_{n}"), "severity": "warning", "message": "burst"}),
                    )
                } else {
                    (
                        format!("devices/{id}/telemetry"),
                        json!({"metrics": {"seq": n}}),
                    )
                };
                client
                    .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
                    .await
                    .unwrap();
            }
            client
        }
    });
    let mut acked = 0;
    while acked < PER_DEVICE {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(e) => panic!("{id}: connection failed after {acked} PUBACKs: {e}"),
        }
    }
    let client = publisher.await.unwrap();
    let _ = client.disconnect().await;
    acked
}

/// 50 devices publish 2 000 QoS 1 messages each into a queue of 100: the writer falls behind, the
/// broker stops reading (back-pressure) instead of dropping, and every acknowledged message —
/// telemetry and alerts — is in SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn burst_of_qos1_from_many_devices_loses_nothing_acknowledged() {
    let sb = StoreBox::start_with(&[
        ("STOREBOX_MQTT__INGEST_QUEUE", "100"),
        ("STOREBOX_MQTT__BUFFER_MB", "4"),
    ]);
    let mut devices = Vec::new();
    for i in 0..DEVICES {
        let id = format!("burst-{i:02}");
        let pw = provision(&sb, &id).await;
        devices.push((id, pw));
    }
    let port = sb.mqtt_port;
    let tasks: Vec<_> = devices
        .iter()
        .map(|(id, pw)| tokio::spawn(burst(port, id.clone(), pw.clone())))
        .collect();
    let mut acked = 0;
    for t in tasks {
        acked += tokio::time::timeout(Duration::from_secs(240), t)
            .await
            .expect("burst finished within 240 s")
            .unwrap();
    }
    assert_eq!(acked, DEVICES * PER_DEVICE);

    let alerts_per_device = PER_DEVICE / ALERT_EVERY;
    let telemetry_per_device = PER_DEVICE - alerts_per_device;
    let db = sb.db();
    let stored = eventually(60, "every acknowledged message stored", || {
        let counts: (i64, i64) = db
            .query_row(
                "SELECT (SELECT count(*) FROM telemetry), (SELECT count(*) FROM alerts)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let want = (
            (DEVICES * telemetry_per_device) as i64,
            (DEVICES * alerts_per_device) as i64,
        );
        async move { (counts == want).then_some(counts) }
    })
    .await;
    assert_eq!(
        stored.0,
        (DEVICES * telemetry_per_device) as i64,
        "telemetry rows"
    );
    // Each device's sequence numbers are all there, each once.
    let distinct: i64 = db
        .query_row(
            "SELECT count(*) FROM (SELECT DISTINCT device_id, json_extract(metrics, '$.seq') FROM telemetry)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(distinct, (DEVICES * telemetry_per_device) as i64);
    let alert_codes: i64 = db
        .query_row(
            "SELECT count(*) FROM (SELECT DISTINCT device_id, code FROM alerts WHERE code LIKE 'BURST_%')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(alert_codes, (DEVICES * alerts_per_device) as i64);

    let m = metrics(&sb).await;
    let value = |name: &str| -> f64 {
        m.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(value("storebox_ingest_dropped_total"), 0.0, "{m}");
    assert!(
        value("storebox_ingest_backpressure_waits_total") > 0.0,
        "the queue of 100 should have filled and held connections back:\n{m}"
    );
}

/// A small tmpfs mounted for one test, unmounted (lazily, so a still-open file cannot keep it)
/// when dropped, also when the test fails.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Writes a file until the filesystem has no space left.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        for chunk in [64 * 1024, 4096, 1] {
            let buf = vec![0u8; chunk];
            while f.write_all(&buf).is_ok() {}
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Disk full: events published meanwhile are not acknowledged, the box stays up and says why
/// (readiness, metrics, status for the UI); once space returns they are stored exactly once and
/// acknowledged without the device doing anything, and the alert clears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_stops_acks_and_recovers_by_itself() {
    let fs = Tmpfs::mount("24m");
    let mut sb = StoreBox::start_in(fs.path(), None, &[]);
    let pw = provision(&sb, "lane-df").await;
    let pw2 = provision(&sb, "fridge-df").await;
    let mut dev = Device::connect(sb.mqtt_port, "lane-df", Some(&pw))
        .await
        .unwrap();
    dev.subscribe("devices/lane-df/events/ack").await;
    let event = |n: usize| json!({"id": format!("df-{n}"), "type": "door.opened"}).to_string();
    dev.publish("devices/lane-df/events", event(0)).await;
    let ack = dev.next_on("devices/lane-df/events/ack", 10).await;
    assert_eq!(
        ack.unwrap()["status"],
        "stored",
        "acked before the disk is full"
    );

    // Empty the WAL so that the next write must grow a file, then take every free block.
    sb.db()
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let filler = fs.fill();
    const DURING: usize = 20;
    for n in 1..=DURING {
        dev.publish("devices/lane-df/events", event(n)).await;
    }
    // A connection signal and an alert in the same outage are kept too.
    let fridge = Device::connect(sb.mqtt_port, "fridge-df", Some(&pw2))
        .await
        .unwrap();
    fridge
        .publish(
            "devices/fridge-df/alerts",
            r#"{"code":"DOOR_OPEN","severity":"warning","message":"door open"}"#,
        )
        .await;
    assert!(
        dev.next_on("devices/lane-df/events/ack", 3).await.is_none(),
        "no event may be acknowledged while nothing can be written"
    );
    let (code, ready) = eventually(10, "/readyz reports the ingest failure", || async {
        let r = reqwest::get(format!("{}/readyz", sb.http)).await.ok()?;
        let code = r.status().as_u16();
        let v: serde_json::Value = r.json().await.ok()?;
        (v["checks"]["ingest"]["failure"]["code"] == "disk_full").then_some((code, v))
    })
    .await;
    assert_eq!(code, 503, "{ready}");
    assert_eq!(
        reqwest::get(format!("{}/healthz", sb.http))
            .await
            .unwrap()
            .status(),
        200
    );
    let m = metrics(&sb).await;
    assert!(m.contains("storebox_ingest_write_stalled 1"), "{m}");
    let (_, status) = sb.get("/api/v1/status").await;
    assert_eq!(status["ingest_failure"]["code"], "disk_full", "{status}");
    let (_, overview) = sb.get("/api/v1/overview").await;
    assert_eq!(overview["ingest_failure"]["code"], "disk_full");
    // Presence is as of the failure (the fridge's connect waits, held), and the list says so.
    let (_, devices) = sb.get("/api/v1/devices").await;
    for d in devices.as_array().unwrap() {
        assert_eq!(
            d["stale_since"], status["ingest_failure"]["since"],
            "{devices}"
        );
    }

    // Space returns: the kept batch is written and acknowledged without any resend.
    std::fs::remove_file(filler).unwrap();
    let mut acked = std::collections::BTreeSet::new();
    while acked.len() < DURING {
        let ack = dev
            .next_on("devices/lane-df/events/ack", 15)
            .await
            .unwrap_or_else(|| panic!("acks after recovery: got {acked:?}"));
        assert_eq!(ack["status"], "stored", "{ack}");
        acked.insert(ack["id"].as_str().unwrap().to_string());
    }
    let stored: i64 = sb
        .db()
        .query_row(
            "SELECT count(DISTINCT event_id) FROM device_events WHERE device_id = 'lane-df'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored as usize, DURING + 1);
    // A resend (as a device that missed the ack would) is not stored twice.
    dev.publish("devices/lane-df/events", event(7)).await;
    let ack = dev.next_on("devices/lane-df/events/ack", 10).await.unwrap();
    assert_eq!(ack["status"], "duplicate");
    let rows: i64 = sb
        .db()
        .query_row(
            "SELECT count(*) FROM device_events WHERE device_id = 'lane-df'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows as usize, DURING + 1, "each event stored exactly once");
    let (online, alerts): (i64, i64) = sb
        .db()
        .query_row(
            "SELECT online, (SELECT count(*) FROM alerts WHERE device_id = 'fridge-df' AND code = 'DOOR_OPEN')
             FROM devices WHERE id = 'fridge-df'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (online, alerts),
        (1, 1),
        "connection and alert from the outage stored"
    );
    let (code, ready) = {
        let r = reqwest::get(format!("{}/readyz", sb.http)).await.unwrap();
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap(),
        )
    };
    assert_eq!(code, 200, "{ready}");
    assert!(metrics(&sb)
        .await
        .contains("storebox_ingest_write_stalled 0"));
    let (_, status) = sb.get("/api/v1/status").await;
    assert!(status["ingest_failure"].is_null(), "{status}");
    let (_, devices) = sb.get("/api/v1/devices").await;
    assert!(
        devices
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["stale_since"].is_null()),
        "{devices}"
    );
    sb.kill9();
}

/// Every long-running task of `serve`, by the name `/readyz` and the log give it.
const TASKS: [&str; 13] = [
    "ingest",
    "presence",
    "scheduler",
    "retention",
    "updates",
    "sync-feed",
    "sync-push",
    "sync-rollups",
    "http",
    "mqtt-listener",
    "mqtt-router",
    "mqtt-publisher",
    "mqtt-link",
];

/// Kills `task` through the debug-build hook; returns what `/readyz` said (None for `http`, which
/// is what answers it), the exit status and the log.
async fn kill_one(
    task: &'static str,
) -> (Option<serde_json::Value>, std::process::ExitStatus, String) {
    let mut sb = tokio::task::spawn_blocking(move || {
        StoreBox::start_with(&[
            ("STOREBOX_TEST_KILL_TASK", task),
            // Sync runs (and is supervised) only with an HQ; nothing listens on the discard port.
            ("STOREBOX_HQ__URL", "http://127.0.0.1:9"),
            ("STOREBOX_HQ__TOKEN", "not-a-real-token"),
        ])
    })
    .await
    .unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut said = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while task != "http" && tokio::time::Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{}/readyz", sb.http)).send().await {
            let code = r.status().as_u16();
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            if v["checks"]["tasks"]["failed_task"] == task {
                assert_eq!(code, 503, "{task}: {v}");
                said = Some(v);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, log) = tokio::task::spawn_blocking(move || {
        let status = sb.wait_exit(30);
        (status, sb.stderr())
    })
    .await
    .unwrap();
    let status = status.unwrap_or_else(|| panic!("{task}: process still running 30 s after"));
    (said, status, log)
}

/// Each task's death (panic, or abort for tasks spawned elsewhere) makes `/readyz` name it, is
/// logged once, and ends the process with a non-zero status.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_supervised_task_that_dies_fails_readiness_and_exits_non_zero() {
    let results = futures_util::future::join_all(TASKS.iter().map(|t| kill_one(t))).await;
    for (task, (said, status, log)) in TASKS.iter().zip(results) {
        if *task != "http" {
            let v = said.unwrap_or_else(|| panic!("{task}: /readyz never named it; log:\n{log}"));
            assert_eq!(v["ready"], false, "{task}: {v}");
        }
        assert!(
            !status.success(),
            "{task}: exit status {status:?}; log:\n{log}"
        );
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("a long-running task ended"))
            .collect();
        assert_eq!(lines.len(), 1, "{task}: logged once:\n{log}");
        assert!(
            lines[0].contains(&format!("task={task}"))
                || lines[0].contains(&format!("task=\"{task}\"")),
            "{task}: {}",
            lines[0]
        );
        // Tasks spawned by the supervisor panic; those spawned elsewhere are aborted.
        assert!(
            lines[0].contains("panicked: test hook") || lines[0].contains("was aborted"),
            "{task}: {}",
            lines[0]
        );
    }
}
