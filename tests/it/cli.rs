//! Process-level behaviour: config errors, graceful shutdown, online backup.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[test]
fn config_errors_name_the_key_and_value() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("storebox.toml");
    // No STOREBOX_* environment here: it would override the file.
    let check = |text: &str| {
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["check-config", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, _) = check("[store]\nid = \"store-0042\"\ntimezone = \"Europe/Rome\"\n");
    assert!(ok && out.contains("store-0042"), "{out}");
    let (ok, _, err) = check("[mqtt]\nlisten = \"0.0.0.0:99999\"\n");
    assert!(
        !ok && err.contains("mqtt.listen") && err.contains("0.0.0.0:99999"),
        "{err}"
    );
    let (ok, _, err) = check("[store]\ntimezone = \"Europe/Atlantis\"\n");
    assert!(
        !ok && err.contains("store.timezone") && err.contains("Europe/Atlantis"),
        "{err}"
    );
    let (ok, _, err) = check("[http]\nlisten = \"127.0.0.1:8080\"\nport = 1\n");
    assert!(!ok && err.contains("unknown field `port`"), "{err}");
    let (ok, _, err) = check("[store\n");
    assert!(!ok && err.contains("not valid TOML"), "{err}");
    let (s, _, err) = cli(
        tmp.path(),
        &["check-config", "--config", "/nonexistent/storebox.toml"],
        None,
    );
    assert!(
        !s.success() && err.contains("/nonexistent/storebox.toml"),
        "{err}"
    );
    // Environment overrides are checked too, and say so.
    let out = std::process::Command::new(BIN)
        .args(["check-config"])
        .env("STOREBOX_MQTT__MAX_PAYLOAD_BYTES", "12")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("environment: mqtt.max_payload_bytes"),
        "{err}"
    );
    // serve refuses a bad config the same way, without starting.
    std::fs::write(&path, "[log]\nlevel = \"chatty\"\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("log.level"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_within_5_s_and_keeps_acked_events() {
    let mut sb = StoreBox::start();
    let pw = sb.add_device("lane-5", "lane");
    let mut dev = Device::connect(sb.mqtt_port, "lane-5", Some(&pw))
        .await
        .unwrap();
    dev.subscribe("devices/lane-5/events/ack").await;
    for i in 0..50 {
        dev.publish(
            "devices/lane-5/events",
            json!({"id": format!("e{i}"), "type":"lane.opened"}).to_string(),
        )
        .await;
    }
    let mut acked = 0;
    while dev.next_on("devices/lane-5/events/ack", 5).await.is_some() {
        acked += 1;
        if acked == 50 {
            break;
        }
    }
    assert_eq!(acked, 50);
    let (status, took) = sb.terminate();
    assert!(status.success(), "exit status {status:?}\n{}", sb.stderr());
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(sb.stderr().contains("storebox stopped"));
    let n: i64 = sb
        .db()
        .query_row("SELECT count(*) FROM device_events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 50);
    // The listener is gone.
    assert!(std::net::TcpStream::connect(("127.0.0.1", sb.mqtt_port)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_running_is_a_consistent_copy() {
    let sb = StoreBox::start();
    for i in 0..5 {
        sb.add_device(&format!("label-{i}"), "label");
    }
    let dest = sb.dir.join("backup.db");
    let (s, out, err) = cli(&sb.dir, &["backup", dest.to_str().unwrap()], None);
    assert!(s.success(), "{out}{err}");
    let copy = rusqlite::Connection::open(&dest).unwrap();
    let n: i64 = copy
        .query_row("SELECT count(*) FROM devices", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 5);
    let check: String = copy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    // Refuses to overwrite.
    let (s, _, err) = cli(&sb.dir, &["backup", dest.to_str().unwrap()], None);
    assert!(!s.success(), "{err}");
    // Still serving.
    assert_eq!(sb.get("/api/v1/devices").await.0, 200);
}

/// An offline admin command run by a user other than the data directory's owner is refused up
/// front, saying how to run it, instead of failing inside SQLite (or, as root, leaving files the
/// service cannot open).
#[test]
fn admin_commands_refuse_a_data_dir_owned_by_another_user() {
    let tmp = tempfile::tempdir().unwrap();
    let root = nix::unistd::geteuid().is_root();
    let (dir, owner) = if root {
        // Owned by another user (nobody); root could write it but must not.
        let dir = tmp.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        let name = nix::unistd::User::from_uid(65534.into())
            .unwrap()
            .map_or("65534".to_string(), |u| u.name);
        (dir, name)
    } else {
        // Not root: a directory owned by root that this user cannot write.
        (std::path::PathBuf::from("/"), "root".to_string())
    };
    for args in [
        &["device", "add", "lane-1", "--kind", "lane"][..],
        &["user", "list"][..],
        &["token", "add", "x", "--role", "staff"][..],
    ] {
        let out = std::process::Command::new(BIN)
            .args(args)
            .env("STOREBOX_STORAGE__DATA_DIR", &dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} ran: {err}");
        assert!(
            err.contains(&format!("belongs to {owner}"))
                && err.contains(&format!("sudo -u {owner} "))
                && err.contains(&args.join(" ")),
            "{args:?}: {err}"
        );
    }
    if root {
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "nothing was created in the refused data dir"
        );
    }
    // The owner runs it.
    let (s, out, err) = cli(
        tmp.path(),
        &["device", "add", "lane-1", "--kind", "lane"],
        None,
    );
    assert!(s.success(), "{out} {err}");
}
