//! Hostile input (issue 18, DESIGN §9): every resource an outsider on the LAN or a compromised
//! device can make the box spend is bounded. Each test drives the real binary over loopback with
//! a low configured cap, so it stays small and fast while proving the cap.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

// ---- raw MQTT 3.1.1 packets (rumqttc answers PUBREC with PUBREL by itself, so QoS 2 abuse needs
// ---- hand-made packets)

fn varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn mqtt_str(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn packet(first: u8, body: Vec<u8>) -> Vec<u8> {
    let mut p = vec![first];
    varint(body.len(), &mut p);
    p.extend(body);
    p
}

fn connect_packet(id: &str, password: &str) -> Vec<u8> {
    let mut b = Vec::new();
    mqtt_str("MQTT", &mut b);
    b.push(4); // 3.1.1
    b.push(0b1100_0010); // username, password, clean session
    b.extend_from_slice(&30u16.to_be_bytes());
    mqtt_str(id, &mut b);
    mqtt_str(id, &mut b);
    mqtt_str(password, &mut b);
    packet(0x10, b)
}

fn publish_qos2(topic: &str, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    mqtt_str(topic, &mut b);
    b.extend_from_slice(&pkid.to_be_bytes());
    b.extend_from_slice(payload);
    packet(0x34, b)
}

fn pubrel(pkid: u16) -> Vec<u8> {
    packet(0x62, pkid.to_be_bytes().to_vec())
}

/// Connects and reads the CONNACK; panics unless the login is accepted.
async fn raw_device(port: u16, id: &str, password: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&connect_packet(id, password)).await.unwrap();
    let mut ack = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut ack))
        .await
        .expect("CONNACK in time")
        .expect("CONNACK");
    assert_eq!(ack, [0x20, 2, 0, 0], "login accepted");
    s
}

/// Reads and discards until the peer closes; true if it did within `secs`.
async fn closed_by_peer(s: &mut TcpStream, secs: f64) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_limited_to_contract_topics_and_capped_per_connection() {
    let sb = StoreBox::start_with(&[("STOREBOX_MQTT__MAX_SUBSCRIPTIONS", "2")]);
    let pw = sb.add_device("fridge-1", "fridge");

    // Any filter under store/ but the contract's own gets its own log in the router, forever:
    // the first such filter closes the connection, so a flood of them costs nothing.
    for filter in ["store/y1", "store/prices/+", "store/notice/x"] {
        let mut d = Device::connect(sb.mqtt_port, "fridge-1", Some(&pw))
            .await
            .unwrap();
        d.subscribe_nowait(filter).await;
        assert!(
            d.closed_within(5).await.is_some(),
            "subscription to {filter} was accepted"
        );
    }

    // Contract topics are fine, up to mqtt.max_subscriptions distinct filters per connection.
    let mut d = Device::connect(sb.mqtt_port, "fridge-1", Some(&pw))
        .await
        .unwrap();
    d.subscribe("store/#").await;
    d.subscribe("devices/fridge-1/commands").await;
    d.subscribe("store/#").await; // the same filter again takes no new place
    assert!(
        d.closed_within(1).await.is_none(),
        "two distinct filters closed the connection"
    );
    d.subscribe_nowait("store/notice").await;
    assert!(
        d.closed_within(5).await.is_some(),
        "a third distinct filter was accepted with mqtt.max_subscriptions = 2"
    );

    let m = metrics(&sb).await;
    let denied: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("storebox_mqtt_acl_denied_total{kind=\"subscribe\"} "))
        .expect("subscribe denials counted")
        .parse()
        .unwrap();
    assert!(denied >= 4.0, "denials: {denied}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_messages_in_flight_are_capped_per_connection() {
    let sb = StoreBox::start_with(&[("STOREBOX_MQTT__MAX_INFLIGHT_QOS2", "10")]);
    let pw = sb.add_device("scale-1", "scale");
    let topic = "devices/scale-1/telemetry";
    let body = br#"{"metrics":{"grams":1}}"#;

    // Released ones give their place back: 30 publish/PUBREL pairs keep the connection.
    let mut s = raw_device(sb.mqtt_port, "scale-1", &pw).await;
    for pkid in 1..=30u16 {
        s.write_all(&publish_qos2(topic, pkid, body)).await.unwrap();
        s.write_all(&pubrel(pkid)).await.unwrap();
    }
    assert!(
        !closed_by_peer(&mut s, 1.0).await,
        "released QoS 2 messages closed the connection"
    );
    drop(s);

    // Ten held without PUBREL are allowed; the eleventh closes the connection. (The same packet
    // id again still counts: rumqttd records every QoS 2 publication until a PUBREL.)
    let mut s = raw_device(sb.mqtt_port, "scale-1", &pw).await;
    for _ in 1..=10 {
        s.write_all(&publish_qos2(topic, 7, body)).await.unwrap();
    }
    assert!(
        !closed_by_peer(&mut s, 1.0).await,
        "ten QoS 2 messages in flight closed the connection"
    );
    s.write_all(&publish_qos2(topic, 8, body)).await.unwrap();
    assert!(
        closed_by_peer(&mut s, 5.0).await,
        "an eleventh QoS 2 message in flight was accepted with mqtt.max_inflight_qos2 = 10"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_device_is_disconnected_within_a_second() {
    let sb = StoreBox::start();
    let pw1 = sb.add_device("lane-1", "lane");
    let pw2 = sb.add_device("lane-2", "lane");

    // Removed offline (another process, database only).
    let mut d1 = Device::connect(sb.mqtt_port, "lane-1", Some(&pw1))
        .await
        .unwrap();
    let start = Instant::now();
    let (s, out, err) = sb.cli(&["device", "remove", "lane-1"]);
    assert!(s.success(), "{out}{err}");
    let cli_done = start.elapsed();
    assert!(
        d1.closed_within(3).await.is_some(),
        "connection of a device removed with the CLI stayed open"
    );
    let cli_close = start.elapsed() - cli_done;
    assert!(
        cli_close < Duration::from_millis(1000),
        "closed {cli_close:?} after the CLI removed it"
    );

    // Removed through the API.
    let mut d2 = Device::connect(sb.mqtt_port, "lane-2", Some(&pw2))
        .await
        .unwrap();
    let r = sb
        .client()
        .delete(format!("{}/api/v1/devices/lane-2", sb.http))
        .bearer_auth(&sb.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let start = Instant::now();
    assert!(
        d2.closed_within(3).await.is_some(),
        "connection of a device removed through the API stayed open"
    );
    let api_close = start.elapsed();
    assert!(
        api_close < Duration::from_millis(1000),
        "closed {api_close:?} after the API removed it"
    );
    eprintln!("closed after removal: cli {cli_close:?}, api {api_close:?}");

    // And it cannot come back.
    assert!(Device::connect(sb.mqtt_port, "lane-2", Some(&pw2))
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_http_methods_share_one_metric_label() {
    let sb = StoreBox::start();
    let addr = sb.http.trim_start_matches("http://").to_string();
    for i in 0..30 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(
            format!("INVENTED{i} /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        assert!(out.starts_with(b"HTTP/1.1 "), "answered");
    }
    let m = metrics(&sb).await;
    assert!(!m.contains("INVENTED"), "an invented method became a label");
    assert!(
        m.contains("method=\"other\""),
        "invented methods are counted as other"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_http_connections_are_closed() {
    let sb = StoreBox::start_with(&[
        ("STOREBOX_HTTP__HEADER_TIMEOUT_SECS", "1"),
        ("STOREBOX_HTTP__IDLE_TIMEOUT_SECS", "2"),
    ]);
    let addr = sb.http.trim_start_matches("http://").to_string();
    let mut silent = Vec::new();
    let mut half = Vec::new();
    let mut slow_body = Vec::new();
    for _ in 0..10 {
        silent.push(TcpStream::connect(&addr).await.unwrap());
        let mut h = TcpStream::connect(&addr).await.unwrap();
        h.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        half.push(h);
        let mut b = TcpStream::connect(&addr).await.unwrap();
        b.write_all(
            b"POST /api/v1/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user",
        )
        .await
        .unwrap();
        slow_body.push(b);
    }
    let start = Instant::now();
    for s in silent.iter_mut().chain(half.iter_mut()) {
        assert!(
            closed_by_peer(s, 4.0).await,
            "idle or half-sent connection open after {:?}",
            start.elapsed()
        );
    }
    for s in slow_body.iter_mut() {
        assert!(
            closed_by_peer(s, 5.0).await,
            "connection with a stalled body open after {:?}",
            start.elapsed()
        );
    }
    // A kept-alive connection gets its next request in time, then waits at most the header timeout.
    let mut k = TcpStream::connect(&addr).await.unwrap();
    k.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = k.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    assert!(closed_by_peer(&mut k, 4.0).await, "idle keep-alive kept");
    // The box still answers.
    assert_eq!(
        status(sb.client().get(format!("{}/healthz", sb.http))).await,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_per_client_address_are_capped() {
    let sb = StoreBox::start_with(&[("STOREBOX_HTTP__MAX_CONNECTIONS_PER_CLIENT", "5")]);
    let addr = sb.http.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The sixth from the same address is closed at once, without an answer.
    let mut sixth = TcpStream::connect(&addr).await.unwrap();
    let _ = sixth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(2), sixth.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "sixth connection not closed");
    assert!(out.is_empty(), "sixth connection was served");
    // Closing the held ones gives their places back.
    drop(held);
    eventually(5, "a place is free again", || async {
        let r = reqwest::Client::new()
            .get(format!("{}/healthz", sb.http))
            .send()
            .await;
        r.ok().filter(|r| r.status() == 200).map(|_| ())
    })
    .await;
    let m = metrics(&sb).await;
    assert!(
        m.contains("storebox_http_connections_refused_total{kind=\"per_client\"}"),
        "refusal counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_passwords_are_counted_before_they_are_checked() {
    let sb = StoreBox::start();
    let (s, out, err) = cli(
        &sb.dir,
        &[
            "user",
            "add",
            "maria",
            "--role",
            "manager",
            "--password-stdin",
        ],
        Some("right-password-123\n"),
    );
    assert!(s.success(), "{out}{err}");
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/session", sb.http);
    let start = Instant::now();
    let tries = (0..40).map(|i| {
        let client = client.clone();
        let url = url.clone();
        async move {
            client
                .post(url)
                .json(&json!({"username": "maria", "password": format!("wrong-{i}-xxxxxx")}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let codes = futures_util::future::join_all(tries).await;
    let checked = codes.iter().filter(|&&c| c == 401).count();
    let limited = codes.iter().filter(|&&c| c == 429).count();
    eprintln!(
        "40 parallel wrong passwords: {checked} checked, {limited} refused, {:?}",
        start.elapsed()
    );
    assert_eq!(checked + limited, 40, "{codes:?}");
    assert!(
        checked <= 5,
        "{checked} wrong passwords were checked: {codes:?}"
    );
    // A right password does not reset the limit another caller ran into for this user.
    let r = client
        .post(&url)
        .json(&json!({"username": "maria", "password": "right-password-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_one_log_line_is_rate_limited() {
    let sb = StoreBox::start_with(&[("STOREBOX_LOG__MAX_LINES_PER_SEC", "5")]);
    sb.add_device("lane-1", "lane");
    // 200 wrong MQTT passwords: each is logged as "login refused" by the same line of code.
    for _ in 0..200 {
        let mut s = TcpStream::connect(("127.0.0.1", sb.mqtt_port))
            .await
            .unwrap();
        s.write_all(&connect_packet("lane-1", "wrong"))
            .await
            .unwrap();
        let mut buf = [0u8; 8];
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    }
    // A line about what was left out follows in a later second, at the next refusal.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut s = TcpStream::connect(("127.0.0.1", sb.mqtt_port))
        .await
        .unwrap();
    s.write_all(&connect_packet("lane-1", "wrong"))
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut [0u8; 8])).await;
    let log = eventually(5, "suppression reported", || async {
        let e = sb.stderr();
        e.contains("log lines left out").then_some(e)
    })
    .await;
    let refused = log.matches("mqtt: login refused").count();
    assert!(
        refused < 50,
        "{refused} 'login refused' lines for 201 refusals with log.max_lines_per_sec = 5"
    );
    assert!(refused >= 5, "some refusals are still logged");
}

/// A fake HQ that answers every request with `body`, gzip-compressed.
async fn gzip_hq(body: Vec<u8>) -> (String, tokio::task::JoinHandle<()>) {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&body).unwrap();
    let gz = std::sync::Arc::new(gz.finish().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let gz = gz.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    gz.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.write_all(&gz).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hq_answers_are_capped_by_their_decompressed_size() {
    // A valid, empty snapshot padded with 20 MB of spaces: about 20 KB compressed.
    let mut body = br#"{"cursor":0,"events":[]"#.to_vec();
    body.resize(body.len() + 20 * 1024 * 1024, b' ');
    body.extend_from_slice(br#","next":0}"#);
    let (url, hq) = gzip_hq(body).await;
    let sb = StoreBox::start_with(&[
        ("STOREBOX_HQ__URL", url.as_str()),
        ("STOREBOX_HQ__TOKEN", "store-token"),
        ("STOREBOX_HQ__RETRY_MAX_SECS", "1"),
        ("STOREBOX_HQ__MAX_RESPONSE_MB", "1"),
    ]);
    let err = eventually(15, "the sync attempt fails on the size cap", || async {
        let (_, v) = sb.get("/api/v1/sync").await;
        v["last_error"]
            .as_str()
            .filter(|e| e.contains("hq.max_response_mb"))
            .map(str::to_string)
    })
    .await;
    assert!(err.contains("1 MiB"), "{err}");
    hq.abort();
}

#[test]
fn files_created_outside_systemd_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // A data dir created by hand-run commands (no systemd UMask=0077).
    let (s, out, err) = cli(&dir, &["token", "add", "t", "--role", "admin"], None);
    assert!(s.success(), "{out}{err}");
    assert_eq!(mode(&dir), 0o700, "data dir");
    assert_eq!(mode(&dir.join("storebox.db")), 0o600, "database");
    // A backup holds password hashes and tokens too.
    let backup = tmp.path().join("store-backup.db");
    let (s, out, err) = cli(&dir, &["backup", backup.to_str().unwrap()], None);
    assert!(s.success(), "{out}{err}");
    assert_eq!(mode(&backup), 0o600, "backup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_from_outside_are_logged_escaped() {
    let sb = StoreBox::start();
    // A sign-in whose user name carries a forged log line.
    let r = sb
        .client()
        .post(format!("{}/api/v1/session", sb.http))
        .json(&json!({"username": "x\nFORGED-HTTP admin signed in", "password": "whatever-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // MQTT logins with a forged line in the user name and in a (refused) client id.
    for (id, user) in [
        ("lane-1", "lane-1\nFORGED-MQTT-USER"),
        ("bad\nFORGED-MQTT-ID", "bad"),
    ] {
        let mut b = Vec::new();
        mqtt_str("MQTT", &mut b);
        b.push(4);
        b.push(0b1100_0010);
        b.extend_from_slice(&30u16.to_be_bytes());
        mqtt_str(id, &mut b);
        mqtt_str(user, &mut b);
        mqtt_str("pw", &mut b);
        let mut s = TcpStream::connect(("127.0.0.1", sb.mqtt_port))
            .await
            .unwrap();
        s.write_all(&packet(0x10, b)).await.unwrap();
        assert!(closed_by_peer(&mut s, 5.0).await, "login {id:?} refused");
    }
    let log = eventually(5, "the three attempts logged", || async {
        let e = sb.stderr();
        (e.contains("sign-in failed")
            && e.contains("mqtt: login refused")
            && e.contains("not a device id"))
        .then_some(e)
    })
    .await;
    for line in log.lines() {
        assert!(!line.starts_with("FORGED"), "forged log line: {line:?}");
    }
    assert!(
        log.contains("FORGED-HTTP"),
        "the name is still logged, escaped"
    );
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/fixtures")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_mqtt_over_tls_with_a_provided_certificate() {
    let (cert, key) = (fixture("tls-test.crt"), fixture("tls-test.key"));
    let sb = StoreBox::start_with(&[
        ("STOREBOX_TLS__CERT_FILE", cert.to_str().unwrap()),
        ("STOREBOX_TLS__KEY_FILE", key.to_str().unwrap()),
        ("STOREBOX_MQTT__TLS_LISTEN", "127.0.0.1:0"),
    ]);
    assert!(sb.http.starts_with("https://"), "{}", sb.http);
    let pem = std::fs::read(&cert).unwrap();

    // HTTPS, trusted through the box's certificate; the session cookie is Secure.
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let https = sb.http.replace("127.0.0.1", "localhost");
    let r = client.get(format!("{https}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (s, out, err) = cli(
        &sb.dir,
        &[
            "user",
            "add",
            "maria",
            "--role",
            "manager",
            "--password-stdin",
        ],
        Some("right-password-123\n"),
    );
    assert!(s.success(), "{out}{err}");
    let r = client
        .post(format!("{https}/api/v1/session"))
        .json(&json!({"username": "maria", "password": "right-password-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("; Secure"), "{cookie}");
    // Plain HTTP on the HTTPS port gets no answer.
    let plain = reqwest::Client::new()
        .get(sb.http.replace("https://", "http://") + "/healthz")
        .send()
        .await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));

    // MQTT over TLS: the same device login, guard and rights as on the plain port.
    let pw = sb.add_device("lane-1", "lane");
    let port = mqtts_port(&sb).await;
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let connect = |password: String| {
        let connector = connector.clone();
        async move {
            let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
            tls.write_all(&connect_packet("lane-1", &password))
                .await
                .unwrap();
            let mut ack = [0u8; 4];
            let r = tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut ack)).await;
            (
                r.map(|r| r.is_ok()).unwrap_or(false) && ack == [0x20, 2, 0, 0],
                tls,
            )
        }
    };
    let (ok, mut tls) = connect(pw.clone()).await;
    assert!(ok, "device login over TLS");
    // Its rights hold over TLS too: a publication on store/ closes the connection.
    let mut b = Vec::new();
    mqtt_str("store/prices/changed", &mut b);
    b.extend_from_slice(b"{}");
    tls.write_all(&packet(0x30, b)).await.unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "store publish over TLS not refused"
    );
    let (ok, _) = connect("wrong-password".into()).await;
    assert!(!ok, "wrong password accepted over TLS");
}

/// The MQTT-over-TLS port from the box's ready line (kept in its stdout by the fixture: read the
/// log line instead).
async fn mqtts_port(sb: &StoreBox) -> u16 {
    eventually(5, "mqtt tls listener in the log", || async {
        sb.stderr()
            .lines()
            .find_map(|l| l.split("mqtt tls listening on ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.trim_matches('"').parse().ok())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_sends_only_the_event_types_of_its_kind() {
    let checkout = json!({"id": "fr-1", "type": "checkout.completed",
        "lines": [{"sku": "1001", "quantity": 1}], "total": 129})
    .to_string();
    let sb = StoreBox::start();
    let pw = sb.add_device("fridge-1", "fridge");
    let mut d = Device::connect(sb.mqtt_port, "fridge-1", Some(&pw))
        .await
        .unwrap();
    d.subscribe("devices/fridge-1/events/ack").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.publish("devices/fridge-1/events", checkout.clone()).await;
    let ack = d
        .next_on("devices/fridge-1/events/ack", 5)
        .await
        .expect("ack");
    assert_eq!(ack["id"], "fr-1");
    assert_eq!(ack["status"], "rejected", "{ack}");
    assert!(ack["reason"].as_str().unwrap().contains("fridge"), "{ack}");
    // Its own kind of event is stored as usual, on the same connection.
    d.publish(
        "devices/fridge-1/events",
        json!({"id": "fr-2", "type": "door.opened"}).to_string(),
    )
    .await;
    let ack = d
        .next_on("devices/fridge-1/events/ack", 5)
        .await
        .expect("ack");
    assert_eq!(
        (ack["id"].as_str(), ack["status"].as_str()),
        (Some("fr-2"), Some("stored"))
    );
    let db = sb.db();
    let stored: i64 = db
        .query_row(
            "SELECT count(*) FROM device_events WHERE type = 'checkout.completed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let queued: i64 = db
        .query_row(
            "SELECT count(*) FROM outbox WHERE type = 'checkout.completed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!((stored, queued), (0, 0), "a fridge's checkout was kept");
    let (_, dead) = sb.get("/api/v1/dead-letters?device=fridge-1").await;
    assert!(
        dead.to_string()
            .contains("not allowed for a device of kind fridge"),
        "{dead}"
    );
    drop(d);

    // The allowed types per kind are configuration.
    let sb = StoreBox::start_with(&[(
        "STOREBOX_MQTT__EVENT_TYPES",
        r#"{fridge = ["door.opened", "checkout.completed"]}"#,
    )]);
    let pw = sb.add_device("fridge-1", "fridge");
    let mut d = Device::connect(sb.mqtt_port, "fridge-1", Some(&pw))
        .await
        .unwrap();
    d.subscribe("devices/fridge-1/events/ack").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.publish("devices/fridge-1/events", checkout).await;
    let ack = d
        .next_on("devices/fridge-1/events/ack", 5)
        .await
        .expect("ack");
    assert_eq!(ack["status"], "stored", "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_in_all_are_capped() {
    let sb = StoreBox::start_with(&[("STOREBOX_HTTP__MAX_CONNECTIONS", "4")]);
    let addr = sb.http.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fifth = TcpStream::connect(&addr).await.unwrap();
    let _ = fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(2), fifth.read_to_end(&mut out)).await;
    assert!(r.is_ok() && out.is_empty(), "fifth connection served");
    drop(held);
    eventually(5, "a place is free again", || async {
        reqwest::get(format!("{}/healthz", sb.http))
            .await
            .ok()
            .filter(|r| r.status() == 200)
            .map(|_| ())
    })
    .await;
    assert!(metrics(&sb)
        .await
        .contains("storebox_http_connections_refused_total{kind=\"total\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_mqtt_connections_take_no_descriptor_of_the_box() {
    let sb = StoreBox::start();
    let before = sb.open_fds();
    // 300 connections that never send CONNECT: rumqttd accepted each at once and held it for its
    // 5 s CONNECT timeout, so enough of them reach the descriptor limit, where its accept loop
    // spins.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(
            TcpStream::connect(("127.0.0.1", sb.mqtt_port))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let during = sb.open_fds();
    eprintln!("box descriptors: {before} before, {during} with 300 silent MQTT connections");
    assert!(
        during < before + 30,
        "300 silent connections took {} descriptors",
        during - before
    );
    // A device that speaks at once is accepted as usual meanwhile.
    let pw = sb.add_device("lane-1", "lane");
    assert!(Device::connect(sb.mqtt_port, "lane-1", Some(&pw))
        .await
        .is_ok());
    drop(idle);
}

/// HQ faces every store of the chain (and whatever else reaches its address): its listener has
/// the same bounds as the store's (src/httpd.rs), with its own `[hq_server]` keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hq_closes_half_sent_connections_and_caps_one_address() {
    let hq = Hq::start_with(&[
        ("STOREBOX_HQ_SERVER__HEADER_TIMEOUT_SECS", "1"),
        ("STOREBOX_HQ_SERVER__MAX_CONNECTIONS_PER_CLIENT", "8"),
    ]);
    let addr = hq.http.trim_start_matches("http://").to_string();
    let mut half = Vec::new();
    for _ in 0..6 {
        let mut h = TcpStream::connect(&addr).await.unwrap();
        h.write_all(b"GET /sync/v1/feed HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ")
            .await
            .unwrap();
        half.push(h);
    }
    // Six held, two places left for this address: the ninth and tenth are closed at once.
    let mut extra = Vec::new();
    for _ in 0..4 {
        extra.push(TcpStream::connect(&addr).await.unwrap());
    }
    let mut refused = 0;
    for s in extra.iter_mut().skip(2) {
        if closed_by_peer(s, 0.5).await {
            refused += 1;
        }
    }
    assert_eq!(
        refused, 2,
        "connections past the per-address cap were not closed"
    );
    drop(extra);
    let start = Instant::now();
    for s in half.iter_mut() {
        assert!(
            closed_by_peer(s, 4.0).await,
            "half-sent request head kept open after {:?}",
            start.elapsed()
        );
    }
    let c = reqwest::Client::new();
    let r = c.get(format!("{}/healthz", hq.http)).send().await.unwrap();
    assert_eq!(r.status(), 200, "HQ still answers");
}
