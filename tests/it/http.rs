//! The HTTP API: sessions with CSRF protection, roles checked on the server, provisioning, the UI
//! shell, OpenAPI and metrics.

use serde_json::{json, Value};

use crate::support::*;

fn add_user(sb: &StoreBox, name: &str, role: &str, password: &str) {
    let (s, out, err) = cli(
        &sb.dir,
        &["user", "add", name, "--role", role, "--password-stdin"],
        Some(&format!("{password}\n")),
    );
    assert!(s.success(), "{out}{err}");
}

async fn login(sb: &StoreBox, name: &str, password: &str) -> (reqwest::Client, String) {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let r = client
        .post(format!("{}/api/v1/session", sb.http))
        .json(&json!({"username": name, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let body: Value = r.json().await.unwrap();
    (client, body["csrf"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_csrf_and_roles() {
    let sb = StoreBox::start();
    add_user(&sb, "maria", "manager", "manager-pass-123");
    add_user(&sb, "sam", "staff", "staff-pass-1234");
    add_user(&sb, "tom", "staff", "tom-pass-12345");

    // Wrong password: 401; repeated: rate limited, even with the right password afterwards.
    let anon = reqwest::Client::new();
    for _ in 0..5 {
        let r = anon
            .post(format!("{}/api/v1/session", sb.http))
            .json(&json!({"username":"tom","password":"nope-nope-nope"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = anon
        .post(format!("{}/api/v1/session", sb.http))
        .json(&json!({"username":"tom","password":"tom-pass-12345"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "sign-in not rate limited");

    // No credentials: 401 with the error shape.
    let r = anon
        .get(format!("{}/api/v1/devices", sb.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "unauthorized");

    let (maria, csrf) = login(&sb, "maria", "manager-pass-123").await;
    // State change without the CSRF header is refused even with a valid session cookie.
    let r = maria
        .post(format!("{}/api/v1/devices", sb.http))
        .json(&json!({"id":"kiosk-1","kind":"kiosk"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = maria
        .post(format!("{}/api/v1/devices", sb.http))
        .header("x-csrf-token", &csrf)
        .json(&json!({"id":"kiosk-1","kind":"kiosk","name":"Entrance kiosk"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let provisioned: Value = r.json().await.unwrap();
    let password = provisioned["password"].as_str().unwrap().to_string();
    // The shown credentials work on the broker.
    let dev = Device::connect(sb.mqtt_port, "kiosk-1", Some(&password)).await;
    assert!(dev.is_ok(), "{:?}", dev.err());
    // The password is never shown again.
    let (_, detail) = sb.get("/api/v1/devices/kiosk-1").await;
    assert!(!detail.to_string().contains(&password));
    // Bad body: 400 naming the problem.
    let r = maria
        .post(format!("{}/api/v1/devices", sb.http))
        .header("x-csrf-token", &csrf)
        .json(&json!({"id":"x/y","kind":"kiosk"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("device id"),
        "{e}"
    );

    // Staff may look but not provision or read the audit log or users.
    let (sam, sam_csrf) = login(&sb, "sam", "staff-pass-1234").await;
    assert_eq!(
        status(sam.get(format!("{}/api/v1/devices", sb.http))).await,
        200
    );
    let r = sam
        .post(format!("{}/api/v1/devices", sb.http))
        .header("x-csrf-token", &sam_csrf)
        .json(&json!({"id":"kiosk-2","kind":"kiosk"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        status(sam.get(format!("{}/api/v1/users", sb.http))).await,
        403
    );
    assert_eq!(
        status(sam.get(format!("{}/api/v1/audit", sb.http))).await,
        403
    );
    assert_eq!(
        status(maria.get(format!("{}/api/v1/users", sb.http))).await,
        403
    );

    // The audit log names who did what.
    let (_, audit) = sb.get("/api/v1/audit").await;
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["actor"] == "maria"
            && e["action"] == "device.provision"
            && e["target"] == "kiosk-1"));

    // Removing the device closes its connection and its password stops working.
    let mut dev = dev.unwrap();
    let r = maria
        .delete(format!("{}/api/v1/devices/kiosk-1", sb.http))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    dev.publish("devices/kiosk-1/telemetry", r#"{"metrics":{"x":1}}"#)
        .await;
    assert!(
        dev.closed_within(5).await.is_some(),
        "removed device still connected"
    );
    assert!(Device::connect(sb.mqtt_port, "kiosk-1", Some(&password))
        .await
        .is_err());

    // Sign out ends the session on the server.
    let r = maria
        .delete(format!("{}/api/v1/session", sb.http))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        status(maria.get(format!("{}/api/v1/devices", sb.http))).await,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_setup_with_the_code_from_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    // No users and no tokens: start the box directly.
    let mut child = KillOnDrop(
        std::process::Command::new(BIN)
            .arg("serve")
            .envs(base_env(tmp.path()))
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(tmp.path().join("err.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.0.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let http = line
        .split(' ')
        .find_map(|w| w.strip_prefix("http="))
        .unwrap()
        .trim()
        .to_string();
    let log = std::fs::read_to_string(tmp.path().join("err.log")).unwrap();
    let code = log
        .split("setup_code")
        .nth(1)
        .and_then(|s| {
            s.split(|c: char| !c.is_alphanumeric() && c != '-' && c != '_')
                .find(|w| w.len() == 12)
        })
        .expect("setup code in log")
        .to_string();
    let c = reqwest::Client::new();
    let status: Value = c
        .get(format!("{http}/api/v1/setup"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["needed"], true);
    let r = c
        .post(format!("{http}/api/v1/setup"))
        .json(&json!({"code":"wrong","username":"admin","password":"admin-pass-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .post(format!("{http}/api/v1/setup"))
        .json(&json!({"code":code,"username":"admin","password":"admin-pass-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .post(format!("{http}/api/v1/setup"))
        .json(&json!({"code":code,"username":"eve","password":"admin-pass-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "setup works only once");
    let r = c
        .post(format!("{http}/api/v1/session"))
        .json(&json!({"username":"admin","password":"admin-pass-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!log.contains("admin-pass-123"));
    drop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_openapi_health_and_metrics() {
    let sb = StoreBox::start();
    let c = reqwest::Client::new();
    let r = c.get(format!("{}/", sb.http)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let html = r.text().await.unwrap();
    assert!(html.contains("<title>storebox"), "{html}");
    let r = c
        .get(format!("{}/", sb.http))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    let r = c.get(format!("{}/app.js", sb.http)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("javascript"));
    // Client-side route falls back to the app shell; a missing asset is 404.
    assert_eq!(status(c.get(format!("{}/devices", sb.http))).await, 200);
    assert_eq!(status(c.get(format!("{}/missing.js", sb.http))).await, 404);

    let doc: Value = c
        .get(format!("{}/api/v1/openapi.json", sb.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/api/v1/devices",
        "/api/v1/devices/{id}",
        "/api/v1/session",
        "/api/v1/dead-letters",
        "/api/v1/audit",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing from OpenAPI");
    }
    // The contract is exact about errors: every operation that needs a caller documents 401
    // and 403, every one with a query string or body documents 400, all in the one error shape.
    let public = [
        ("get", "/api/v1/setup"),
        ("post", "/api/v1/setup"),
        ("post", "/api/v1/session"),
    ];
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let codes = op["responses"].as_object().unwrap();
            let error_shape = |c: &str| {
                codes[c]["content"]["application/json"]["schema"]["$ref"]
                    == "#/components/schemas/ErrorBody"
            };
            if !public.contains(&(method.as_str(), path.as_str())) {
                for c in ["401", "403"] {
                    assert!(
                        codes.contains_key(c) && error_shape(c),
                        "{method} {path}: {c}"
                    );
                }
            }
            let has_query = op["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
            if has_query || op.get("requestBody").is_some() {
                assert!(
                    codes.contains_key("400") && error_shape("400"),
                    "{method} {path}: 400"
                );
            }
        }
    }
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["UserChange"]["minProperties"], 1,
        "{}",
        schemas["UserChange"]
    );
    assert!(schemas["UserChange"].get("maxProperties").is_none());
    assert_eq!(
        schemas["NewPassword"]["properties"]["password"]["minLength"],
        10
    );
    assert_eq!(
        schemas["NewTicket"]["properties"]["subject"]["maxLength"],
        200
    );
    // A malformed query string answers in the error shape too (axum's own answer is plain text).
    let r = c
        .get(format!("{}/api/v1/alerts?open=maybe", sb.http))
        .bearer_auth(&sb.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_query", "{body}");
    let r = c
        .get(format!("{}/api/v1/nope", sb.http))
        .bearer_auth(&sb.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    assert_eq!(
        c.get(format!("{}/healthz", sb.http))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok\n"
    );
    let ready: Value = c
        .get(format!("{}/readyz", sb.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
    let m = c
        .get(format!("{}/metrics", sb.http))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "storebox_mqtt_connected_devices",
        "storebox_db_size_bytes",
        "storebox_http_request_duration_seconds_bucket",
        "storebox_events_acked_total",
        "storebox_devices_online",
    ] {
        assert!(m.contains(name), "{name} missing from /metrics");
    }
    assert!(
        m.contains("route=\"/api/v1/openapi.json\""),
        "latency labelled by route"
    );
}

/// Bearer tokens are trusted from memory for one second (`auth::TOKEN_CACHE_MS`): a token removed
/// with the CLI (another process) is refused by the running box within that time, and a wrong
/// token is refused at once, also after a valid one was used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_bearer_token_is_refused_within_a_second() {
    let sb = StoreBox::start();
    let (s, out, err) = sb.cli(&["token", "add", "lane-9", "--role", "staff"]);
    assert!(s.success(), "{out}{err}");
    let token = out.lines().last().unwrap().trim().to_string();
    let ask = |t: String| {
        let req = sb
            .client()
            .get(format!("{}/api/v1/catalog?q=x", sb.http))
            .bearer_auth(t);
        status(req)
    };
    assert_eq!(ask(token.clone()).await, 200);
    assert_eq!(ask(format!("{token}x")).await, 401, "a wrong token");
    assert_eq!(ask(token.clone()).await, 200, "cached and still valid");

    let (s, out, err) = sb.cli(&["token", "remove", "lane-9"]);
    assert!(s.success(), "{out}{err}");
    let removed = std::time::Instant::now();
    eventually(5, "the removed token to be refused", || async {
        (ask(token.clone()).await == 401).then_some(())
    })
    .await;
    // One second of trust plus generous slack for a loaded test machine (the exact expiry is a
    // unit test of `TokenCache` with explicit instants).
    assert!(
        removed.elapsed() < std::time::Duration::from_millis(2_500),
        "refused only after {:?}",
        removed.elapsed()
    );
    assert_eq!(ask(token.clone()).await, 401, "and stays refused");
}
