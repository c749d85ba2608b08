//! The support bundle (`storebox diag`, `GET /api/v1/diag`, a ticket's attachment): what support
//! needs is in it, and no secret of any kind is.

use serde_json::{json, Value};

use crate::support::*;

/// The newest `storebox.*.log` file in the box's log directory.
fn newest_log(sb: &StoreBox) -> std::path::PathBuf {
    let dir = sb.dir.join("logs");
    let mut logs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("storebox")
        })
        .collect();
    logs.sort();
    logs.pop().expect("a log file")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_support_bundle_has_what_support_needs_and_no_secret() {
    // Secrets of every kind, planted where they live.
    let hq_token = "hq-Planted-Token-4242-quux";
    let sb = StoreBox::start_with(&[
        ("STOREBOX_HQ__URL", "http://127.0.0.1:9/"),
        ("STOREBOX_HQ__TOKEN", hq_token),
        ("STOREBOX_STORE__ID", "store-0042"),
    ]);
    let device_password = sb.add_device("fridge-1", "fridge");
    let api_token = sb.token.clone();
    // The box logged a one-time setup code (no staff user yet).
    let setup_code = sb
        .stderr()
        .split_whitespace()
        .find_map(|w| w.strip_prefix("setup_code="))
        .map(|s| s.trim_matches('"').to_string())
        .expect("setup code in the log");
    let user_password = "Correct-Horse-Battery-9";
    let (s, out, err) = cli(
        &sb.dir,
        &[
            "user",
            "add",
            "mara",
            "--role",
            "manager",
            "--password-stdin",
        ],
        Some(&format!("{user_password}\n")),
    );
    assert!(s.success(), "{out} {err}");
    let login = reqwest::Client::new()
        .post(format!("{}/api/v1/session", sb.http))
        .json(&json!({"username": "mara", "password": user_password}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let session_id = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .find_map(|v| {
            let v = v.to_str().ok()?;
            let (_, rest) = v.split_once('=')?;
            Some(rest.split(';').next()?.to_string())
        })
        .expect("session cookie");
    assert!(session_id.len() >= 20, "{session_id}");
    // A careless log line (a device firmware that logs its own credentials, a proxy that logs
    // headers) must not carry them into the bundle either.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(newest_log(&sb))
            .unwrap();
        writeln!(
            f,
            "2026-11-30T09:00:00.000000Z  WARN storebox::test: Authorization: Bearer {api_token} \
             password={device_password} hq token: {hq_token} session={session_id} \
             setup_code={setup_code} user password: {user_password}"
        )
        .unwrap();
        writeln!(
            f,
            "2026-11-30T09:00:01.000000Z ERROR storebox::test: planted error line for the bundle"
        )
        .unwrap();
    }
    let secrets = [
        ("device password", device_password.as_str()),
        ("API token", api_token.as_str()),
        ("HQ token", hq_token),
        ("setup code", setup_code.as_str()),
        ("session id", session_id.as_str()),
        ("user password", user_password),
    ];
    let no_secret = |what: &str, text: &str| {
        for (name, secret) in secrets {
            assert!(
                !text.contains(secret),
                "the {what} contains the {name} {secret:?}"
            );
        }
    };

    // 1. The CLI, while the server runs.
    let out_file = sb.dir.join("bundle.json");
    let (s, out, err) = sb.cli(&["diag", "--out", out_file.to_str().unwrap()]);
    assert!(s.success(), "{out} {err}");
    assert!(err.contains("support bundle written"), "{err}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&out_file).unwrap();
    no_secret("CLI bundle", &text);
    let b: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(b["format"], 1);
    assert_eq!(b["build"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(b["store"]["id"], "store-0042");
    assert_eq!(b["config"]["hq"]["token"], "<redacted>");
    assert_eq!(b["config"]["hq"]["url"], "http://127.0.0.1:9/");
    assert_eq!(b["database"]["quick_check"], "ok", "{}", b["database"]);
    assert!(b["database"]["file_bytes"].as_u64().unwrap() > 0);
    assert!(b["database"]["wal_bytes"].is_u64(), "{}", b["database"]);
    assert_eq!(b["database"]["rows"]["devices"], 1);
    assert_eq!(b["devices"]["total"], 1);
    assert_eq!(b["devices"]["by_kind"]["fridge"]["total"], 1);
    assert!(b["sync"]["outbox"]["business"].is_i64(), "{}", b["sync"]);
    assert!(b["disk"]["data_dir"]["available_bytes"].as_u64().unwrap() > 0);
    assert!(b["alerts"]["open"].is_i64());
    let recent = b["logs"]["recent"].as_array().unwrap();
    assert!(
        recent
            .iter()
            .any(|l| l.as_str().unwrap().contains("setup_code=<redacted>")),
        "the setup code's log line is there, redacted: {recent:?}"
    );
    let errors = b["logs"]["recent_errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|l| l.as_str().unwrap().contains("planted error line")),
        "{errors:?}"
    );
    assert!(b["systemd"].is_object());
    assert!(
        b["audit_recent"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "device.provision"),
        "{}",
        b["audit_recent"]
    );

    // 2. The API: managers and admins download it; staff may not.
    let r = sb
        .client()
        .get(format!("{}/api/v1/diag", sb.http))
        .bearer_auth(&sb.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let disposition = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        disposition.starts_with("attachment; filename=\"storebox-diag-store-0042-"),
        "{disposition}"
    );
    let text = r.text().await.unwrap();
    no_secret("API bundle", &text);
    let b: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(b["live"]["sync"]["configured"], true, "{}", b["live"]);
    assert_eq!(b["live"]["sync"]["hq_url"], "http://127.0.0.1:9/");
    assert!(b["live"]["uptime_s"].is_u64());
    assert_eq!(b["database"]["quick_check"], "ok");
    let (s, out, err) = sb.cli(&["token", "add", "staff-script", "--role", "staff"]);
    assert!(s.success(), "{out} {err}");
    let staff_token = out.lines().last().unwrap().trim().to_string();
    let r = sb
        .client()
        .get(format!("{}/api/v1/diag", sb.http))
        .bearer_auth(&staff_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // 3. Attached to a support ticket (and so sent to HQ with it).
    let (s, t) = sb
        .post(
            "/api/v1/tickets",
            json!({"subject": "Fridge warm", "description": "Alarm at night.",
                   "device_id": "fridge-1", "attach_bundle": true}),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    assert_eq!(t["diagnostics"]["bundle"]["format"], 1, "{t}");
    assert_eq!(t["diagnostics"]["bundle"]["devices"]["total"], 1);
    no_secret("ticket", &t.to_string());
    let queued: String = sb
        .db()
        .query_row(
            "SELECT payload FROM outbox WHERE type = 'ticket.opened'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(queued.contains("\"bundle\""), "the bundle goes to HQ");
    no_secret("ticket.opened event", &queued);
    // Without the flag the ticket carries the short summary only.
    let (s, t) = sb
        .post(
            "/api/v1/tickets",
            json!({"subject": "Lane slow", "description": "Since noon."}),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    assert!(t["diagnostics"]["bundle"].is_null());
}
