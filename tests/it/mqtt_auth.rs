//! Broker authentication and topic authorization, over real MQTT connections.

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_unknown_and_wrong_password_are_refused() {
    let sb = StoreBox::start();
    let pw = sb.add_device("scale-1", "scale");

    assert!(
        Device::connect(sb.mqtt_port, "scale-1", None)
            .await
            .is_err(),
        "anonymous accepted"
    );
    assert!(
        Device::connect(sb.mqtt_port, "scale-1", Some("not-the-password"))
            .await
            .is_err(),
        "wrong password accepted"
    );
    assert!(
        Device::connect(sb.mqtt_port, "ghost-7", Some(&pw))
            .await
            .is_err(),
        "unknown device accepted"
    );
    let ok = Device::connect(sb.mqtt_port, "scale-1", Some(&pw)).await;
    assert!(ok.is_ok(), "right password refused: {:?}", ok.err());

    let (_, metrics) = {
        let r = reqwest::get(format!("{}/metrics", sb.http)).await.unwrap();
        (r.status(), r.text().await.unwrap())
    };
    let failures: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("storebox_mqtt_auth_failures_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(failures >= 3.0, "auth failures counted: {failures}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_spoof_another_read_its_topics_or_publish_prices() {
    let sb = StoreBox::start();
    let pw_a = sb.add_device("lane-1", "lane");
    let pw_b = sb.add_device("lane-2", "lane");

    // B listens to its own command topic and to store/#.
    let mut b = Device::connect(sb.mqtt_port, "lane-2", Some(&pw_b))
        .await
        .unwrap();
    b.subscribe("devices/lane-2/commands").await;
    b.subscribe("store/#").await;

    // 1. A publishes an event as B: connection closed, nothing stored for B.
    let mut a = Device::connect(sb.mqtt_port, "lane-1", Some(&pw_a))
        .await
        .unwrap();
    a.publish(
        "devices/lane-2/events",
        json!({"id":"spoof-1","type":"lane.opened"}).to_string(),
    )
    .await;
    assert!(
        a.closed_within(5).await.is_some(),
        "spoofing publish did not close the connection"
    );

    // 2. A subscribes to B's commands: closed.
    let mut a = Device::connect(sb.mqtt_port, "lane-1", Some(&pw_a))
        .await
        .unwrap();
    a.subscribe_nowait("devices/lane-2/commands").await;
    assert!(
        a.closed_within(5).await.is_some(),
        "foreign subscription did not close the connection"
    );

    // 3. A publishes a price change: closed, and B never sees it.
    let mut a = Device::connect(sb.mqtt_port, "lane-1", Some(&pw_a))
        .await
        .unwrap();
    a.publish(
        "store/prices/changed",
        json!({"skus":[{"sku":"1001","price":1}]}).to_string(),
    )
    .await;
    assert!(
        a.closed_within(5).await.is_some(),
        "store publish did not close the connection"
    );
    assert!(
        b.next_on("store/prices/changed", 1).await.is_none(),
        "B received a spoofed price change"
    );

    // 4. A wildcard subscription reaching other devices: closed.
    let mut a = Device::connect(sb.mqtt_port, "lane-1", Some(&pw_a))
        .await
        .unwrap();
    a.subscribe_nowait("devices/+/commands").await;
    assert!(
        a.closed_within(5).await.is_some(),
        "wildcard subscription did not close the connection"
    );

    // 5. A will on another device's status topic: refused at connect.
    let will = rumqttc::LastWill::new(
        "devices/lane-2/status",
        r#"{"online":false}"#,
        rumqttc::QoS::AtLeastOnce,
        true,
    );
    assert!(
        Device::connect_opts(sb.mqtt_port, "lane-1", Some(&pw_a), 30, Some(will))
            .await
            .is_err()
    );

    // Logged where staff see it: dead letters, audit log, metrics.
    let (_, dead) = eventually(10, "4 refusals dead-lettered", || async {
        let (s, v) = sb.get("/api/v1/dead-letters?device=lane-1").await;
        (v.as_array().map_or(0, |a| a.len()) >= 5).then_some((s, v))
    })
    .await;
    let reasons: Vec<String> = dead
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["reason"].as_str().unwrap().to_string())
        .collect();
    assert!(
        reasons.iter().all(|r| r.starts_with("not authorized")),
        "{reasons:?}"
    );
    assert_any(&reasons, "devices/lane-2/events");
    assert_any(&reasons, "store/prices/changed");
    let (_, audit) = sb.get("/api/v1/audit").await;
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "mqtt.denied" && e["actor"] == "device:lane-1"));
    let (s, _) = sb.get("/api/v1/devices/lane-2").await;
    assert_eq!(s, 200);
    let n: i64 = sb
        .db()
        .query_row(
            "SELECT count(*) FROM device_events WHERE device_id='lane-2'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0, "spoofed event was stored");
    let metrics = metrics(&sb).await;
    assert!(
        metrics.contains("storebox_mqtt_acl_denied_total{kind=\"publish\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("storebox_mqtt_acl_denied_total{kind=\"subscribe\"} 2"),
        "{metrics}"
    );

    // B itself is unaffected and can still be commanded.
    let (s, _) = sb
        .post("/api/v1/devices/lane-2/commands", json!({"name":"reboot"}))
        .await;
    assert_eq!(s, 202);
    let cmd = b
        .next_on("devices/lane-2/commands", 5)
        .await
        .expect("B gets its command");
    assert_eq!(cmd["name"], "reboot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_clients_with_topic_aliases_are_authorized_too() {
    use rumqttc::v5::{mqttbytes::v5::PublishProperties, mqttbytes::QoS, AsyncClient, MqttOptions};
    let sb = StoreBox::start();
    let pw = sb.add_device("fridge-1", "fridge");
    let mut opts = MqttOptions::new("fridge-1", "127.0.0.1", sb.mqtt_port);
    opts.set_credentials("fridge-1", pw);
    opts.set_topic_alias_max(Some(10));
    let (client, mut el) = AsyncClient::new(opts, 100);
    let (tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            if let Err(e) = el.poll().await {
                let _ = tx.send(e.to_string());
                return;
            }
        }
    });
    // Establish alias 1 for the device's own telemetry topic, then use it with an empty topic.
    let props = PublishProperties {
        topic_alias: Some(1),
        ..Default::default()
    };
    client
        .publish_with_properties(
            "devices/fridge-1/telemetry",
            QoS::AtLeastOnce,
            false,
            r#"{"metrics":{"temp_c":3.5}}"#,
            props.clone(),
        )
        .await
        .unwrap();
    client
        .publish_with_properties(
            "",
            QoS::AtLeastOnce,
            false,
            r#"{"metrics":{"temp_c":3.7}}"#,
            props,
        )
        .await
        .unwrap();
    let detail = eventually(10, "two telemetry points via alias", || async {
        let (_, v) = sb.get("/api/v1/devices/fridge-1").await;
        (v["telemetry"].as_array().map_or(0, |a| a.len()) == 2).then_some(v)
    })
    .await;
    assert_eq!(detail["online"], true);
    // An alias cannot smuggle a foreign topic: set alias 2 to another device's topic → closed.
    let props = PublishProperties {
        topic_alias: Some(2),
        ..Default::default()
    };
    let _ = client
        .publish_with_properties(
            "devices/lane-9/events",
            QoS::AtLeastOnce,
            false,
            "{}",
            props,
        )
        .await;
    let e = tokio::time::timeout(std::time::Duration::from_secs(5), closed.recv()).await;
    assert!(matches!(e, Ok(Some(_))), "v5 spoof not closed");
}
