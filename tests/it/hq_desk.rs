//! The support desk end to end: a real `storebox hq` (each storage engine) and a real
//! `storebox serve` store; a ticket opened at the store is routed to its team, the team's webhook
//! (a test receiver on 127.0.0.1:0 that fails once) is notified and the failure retried and
//! recorded, support assigns, replies and closes from the desk and the store shows it; support may
//! not edit routing.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::hq_console::{add_user, browser, sign_in};
use crate::support::{eventually, Engine, Hq, StoreBox};

/// The test webhook receiver: records every body, answers 500 to the first `fail_first`
/// requests and 200 after.
struct TestWebhookReceiver {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    _task: tokio::task::JoinHandle<()>,
}

async fn test_webhook_receiver(fail_first: usize) -> TestWebhookReceiver {
    let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
    let seen = bodies.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let seen = seen.clone();
            async move {
                let mut b = seen.lock().unwrap();
                b.push(v);
                if b.len() <= fail_first {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    TestWebhookReceiver {
        url,
        bodies,
        _task: task,
    }
}

/// The test SMTP receiver: a minimal SMTP server on 127.0.0.1:0 that accepts every message and
/// records its DATA.
struct TestSmtpReceiver {
    port: u16,
    mails: Arc<Mutex<Vec<String>>>,
    _task: tokio::task::JoinHandle<()>,
}

async fn test_smtp_receiver() -> TestSmtpReceiver {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mails: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = mails.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                w.write_all(b"220 test-smtp-receiver\r\n").await.unwrap();
                while let Ok(Some(line)) = lines.next_line().await {
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let answer: &[u8] = match verb.as_str() {
                        "DATA" => {
                            w.write_all(b"354 go on\r\n").await.unwrap();
                            let mut data = String::new();
                            while let Ok(Some(l)) = lines.next_line().await {
                                if l == "." {
                                    break;
                                }
                                data.push_str(&l);
                                data.push('\n');
                            }
                            seen.lock().unwrap().push(data);
                            b"250 queued\r\n"
                        }
                        "QUIT" => {
                            let _ = w.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => b"250 ok\r\n",
                    };
                    w.write_all(answer).await.unwrap();
                }
            });
        }
    });
    TestSmtpReceiver {
        port,
        mails,
        _task: task,
    }
}

async fn admin_put(hq: &Hq, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .put(format!("{}{path}", hq.http))
        .bearer_auth(&hq.admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn session_post(hq: &Hq, c: &reqwest::Client, csrf: &str, path: String, body: Value) -> u16 {
    c.post(format!("{}{path}", hq.http))
        .header("x-csrf-token", csrf)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn desk_routes_notifies_and_answers(engine: Engine) {
    let hook = test_webhook_receiver(1).await;
    let smtp = test_smtp_receiver().await;
    let smtp_port = smtp.port.to_string();
    let hq = Hq::start_on(
        engine,
        &[
            ("STOREBOX_HQ_SERVER__DESK_RETRY_BASE_SECS", "1"),
            ("STOREBOX_HQ_SERVER__SMTP_HOST", "127.0.0.1"),
            ("STOREBOX_HQ_SERVER__SMTP_PORT", &smtp_port),
            ("STOREBOX_HQ_SERVER__SMTP_TLS", "none"),
            ("STOREBOX_HQ_SERVER__SMTP_FROM", "hq@desk.test"),
        ],
    );
    add_user(&hq, "sam", "support", "support-password-1");
    add_user(&hq, "ann", "support", "support-password-2");
    let (s, v) = admin_put(
        &hq,
        "/hq/v1/desk/teams",
        json!({"teams": [{"name": "scales", "members": ["sam", "ann"], "on_call": "ann",
                          "webhook_url": hook.url, "email": "on-call@desk.test"}]}),
    )
    .await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = admin_put(
        &hq,
        "/hq/v1/desk/routing",
        json!({"routes": [{"category": "scale", "team": "scales"}]}),
    )
    .await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = admin_put(
        &hq,
        "/hq/v1/desk/routing",
        json!({"routes": [{"category": "fridge", "team": "nobody"}]}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("routes[0].team"), "{v}");

    // Guide preview: rendered as the store renders it (raw HTML shown as text).
    let (s, v) = hq
        .post(
            "/hq/v1/guides/preview",
            json!({"body": "Call **facilities**\n<script>x()</script>"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let html = v["html"].as_str().unwrap();
    assert!(
        html.contains("<strong>facilities</strong>") && html.contains("&lt;script&gt;"),
        "{html}"
    );

    let token = hq.add_store("s1", "");
    let env = hq.store_env("s1", &token);
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let sb = StoreBox::start_with(&refs);
    let (s, t) = sb
        .post(
            "/api/v1/tickets",
            json!({"subject": "Scale 2 drifts", "description": "reads 20 g heavy", "category": "scale"}),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    let id = t["id"].as_str().unwrap().to_string();

    // Routed to its team in the desk queue.
    let queued = eventually(20, "ticket in the desk queue", || async {
        let (_, v) = hq.get("/hq/v1/desk/tickets?category=scale").await;
        v["tickets"]
            .as_array()
            .and_then(|a| a.iter().find(|t| t["id"] == id.as_str()).cloned())
    })
    .await;
    assert_eq!(queued["team"], "scales", "{queued}");
    assert_eq!(
        (queued["store"].as_str(), queued["status"].as_str()),
        (Some("s1"), Some("open"))
    );

    // The on-call member's webhook: the first attempt gets 500, the retry succeeds; both recorded.
    let n = eventually(30, "notification sent after a retry", || async {
        let (_, v) = hq.get("/hq/v1/desk/notifications").await;
        let n = v["notifications"]
            .as_array()?
            .iter()
            .find(|n| n["channel"] == "webhook")?
            .clone();
        (n["state"] == "sent").then_some(n)
    })
    .await;
    // And by e-mail through the test SMTP receiver.
    let mail = eventually(30, "notification mailed", || async {
        let (_, v) = hq.get("/hq/v1/desk/notifications").await;
        let n = v["notifications"]
            .as_array()?
            .iter()
            .find(|n| n["channel"] == "email")?
            .clone();
        (n["state"] == "sent").then_some(n)
    })
    .await;
    assert_eq!(
        (mail["target"].as_str(), mail["attempts"].as_i64()),
        (Some("on-call@desk.test"), Some(1)),
        "{mail}"
    );
    let mails = smtp.mails.lock().unwrap().clone();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(mails[0].contains("To: on-call@desk.test"), "{}", mails[0]);
    assert!(
        mails[0].contains("Scale 2 drifts") && mails[0].contains(&id),
        "{}",
        mails[0]
    );
    assert_eq!(n["attempts"], 2, "{n}");
    assert!(n["last_error"].as_str().unwrap().contains("500"), "{n}");
    let bodies = hook.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(bodies[1]["ticket"], id.as_str());
    assert_eq!(bodies[1]["store"], "s1");
    assert_eq!(bodies[1]["category"], "scale");
    assert_eq!(bodies[1]["subject"], "Scale 2 drifts");
    assert_eq!(bodies[1]["on_call"], "ann");
    assert!(bodies[1]["url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/#/desk/s1/{id}")));

    // Support works the desk: assign, reply, close; but may not edit routing.
    let sam = browser();
    let (_, me) = sign_in(&hq, &sam, "sam", "support-password-1").await;
    let csrf = me["csrf"].as_str().unwrap().to_string();
    let post = |path: String, body: Value| session_post(&hq, &sam, &csrf, path, body);
    assert_eq!(
        post(
            format!("/hq/v1/desk/tickets/{id}/assign"),
            json!({"user": "ann"})
        )
        .await,
        204
    );
    assert_eq!(
        post(
            format!("/hq/v1/desk/tickets/{id}/assign"),
            json!({"user": "nobody"})
        )
        .await,
        400
    );
    let r = sam
        .put(format!("{}/hq/v1/desk/routing", hq.http))
        .header("x-csrf-token", &csrf)
        .json(&json!({"routes": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "support may not edit routing");
    assert_eq!(
        post(
            format!("/hq/v1/tickets/{id}/replies"),
            json!({"message": "Recalibrate, then reboot"})
        )
        .await,
        201
    );
    eventually(20, "the desk's reply at the store", || async {
        let (_, t) = sb.get(&format!("/api/v1/tickets/{id}")).await;
        (t["replies"][0]["message"] == "Recalibrate, then reboot").then_some(())
    })
    .await;
    assert_eq!(
        post(format!("/hq/v1/desk/tickets/{id}/close"), json!({})).await,
        201
    );
    let t = eventually(20, "closed at the store", || async {
        let (_, t) = sb.get(&format!("/api/v1/tickets/{id}")).await;
        (t["status"] == "closed").then_some(t)
    })
    .await;
    assert_eq!(t["replies"].as_array().unwrap().len(), 2, "{t}");

    // Every change is on the ticket, with who.
    let d: Value = sam
        .get(format!("{}/hq/v1/desk/tickets/{id}", hq.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let record: Vec<(String, String)> = d["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["actor"].as_str().unwrap().into(),
                c["action"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("routing", "routed"),
        ("sam", "assigned"),
        ("sam", "replied"),
        ("sam", "closed"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(record, want, "{d}");
    assert_eq!(
        (d["status"].as_str(), d["assignee"].as_str()),
        (Some("closed"), Some("ann"))
    );
    let diag = d["opened"]["diagnostics"].to_string();
    assert!(
        diag.contains("\"version\""),
        "diagnostics reach the desk: {d}"
    );
}

macro_rules! on_each_engine {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::Engine::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::Engine::Postgres).await
                }
            )*
        }
    };
}

on_each_engine!(desk_routes_notifies_and_answers);
