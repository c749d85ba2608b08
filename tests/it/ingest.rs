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
