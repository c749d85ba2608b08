//! HQ's console sign-in and roles: a real `storebox hq` on each storage engine, users added with
//! the real CLI, a cookie-keeping HTTP client as a browser would be.

use serde_json::{json, Value};

use crate::support::{Engine, Hq, BIN};

pub fn add_user(hq: &Hq, name: &str, role: &str, password: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new(BIN)
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
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "hq user add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap()
}

pub async fn sign_in(hq: &Hq, c: &reqwest::Client, name: &str, password: &str) -> (u16, Value) {
    let r = c
        .post(format!("{}/hq/v1/session", hq.http))
        .json(&json!({"name": name, "password": password}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn console_roles(engine: Engine) {
    let hq = Hq::start_on(engine, &[]);
    let store_token = hq.add_store("s1", "");
    add_user(&hq, "olga", "operator", "operator-password-1");
    add_user(&hq, "sam", "support", "support-password-1");

    // Before sign-in: the console shows nothing of the fleet, the API refuses.
    let anon = browser();
    let page = anon.get(format!("{}/", hq.http)).send().await.unwrap();
    assert_eq!(page.status(), 401);
    let html = page.text().await.unwrap();
    assert!(html.contains("Sign in") && !html.contains("s1"), "{html}");
    let r = anon
        .get(format!("{}/hq/v1/stores", hq.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A store's token never reaches the admin API.
    let r = anon
        .get(format!("{}/hq/v1/stores", hq.http))
        .bearer_auth(&store_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        sign_in(&hq, &anon, "olga", "wrong-password-xx").await.0,
        401
    );
    assert_eq!(
        sign_in(&hq, &anon, "nobody", "wrong-password-xx").await.0,
        401
    );

    // Support: reads the fleet, may not author.
    let sam = browser();
    let (s, me) = sign_in(&hq, &sam, "sam", "support-password-1").await;
    assert_eq!((s, me["role"].as_str()), (201, Some("support")), "{me}");
    let csrf = me["csrf"].as_str().unwrap().to_string();
    let html = sam
        .get(format!("{}/", hq.http))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("/assets/app.js"), "the console shell: {html}");
    let fleet: Value = sam
        .get(format!("{}/hq/v1/fleet", hq.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fleet["stores"][0]["id"], "s1", "{fleet}");
    let r = sam
        .post(format!("{}/hq/v1/events", hq.http))
        .header("x-csrf-token", &csrf)
        .json(&json!({"target": {"all": true}, "events": [{"type": "notice.post", "payload": {"message": "hi"}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "support may not author");

    // Operator: authors, but only with the session's CSRF token.
    let olga = browser();
    let (_, me) = sign_in(&hq, &olga, "olga", "operator-password-1").await;
    let csrf = me["csrf"].as_str().unwrap().to_string();
    let body = json!({"target": {"all": true}, "events": [{"type": "notice.post", "payload": {"message": "hi"}}]});
    let r = olga
        .post(format!("{}/hq/v1/events", hq.http))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a session write without its CSRF token");
    let r = olga
        .post(format!("{}/hq/v1/events", hq.http))
        .header("x-csrf-token", &csrf)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Signed out: the cookie no longer works.
    let r = olga
        .delete(format!("{}/hq/v1/session", hq.http))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = olga
        .get(format!("{}/hq/v1/stores", hq.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Parallel wrong passwords are counted before they are checked.
    let tries = (0..14).map(|_| {
        let (hq_url, c) = (hq.http.clone(), browser());
        tokio::spawn(async move {
            c.post(format!("{hq_url}/hq/v1/session"))
                .json(&json!({"name": "sam", "password": "not-the-password"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    });
    let mut codes = Vec::new();
    for t in tries {
        codes.push(t.await.unwrap());
    }
    let limited = codes.iter().filter(|c| **c == 429).count();
    assert!(limited >= 2, "over the limit of 10 failures: {codes:?}");
    assert!(codes.iter().all(|c| *c == 401 || *c == 429), "{codes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_console_sign_in_and_roles() {
    console_roles(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_console_sign_in_and_roles() {
    console_roles(Engine::Postgres).await;
}
