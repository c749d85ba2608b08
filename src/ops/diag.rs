//! The support bundle (`storebox diag`, `GET /api/v1/diag`, or attached to a support ticket): one
//! readable JSON document with what first-level support asks for first, made while the box runs:
//! version and build, the effective config with secrets redacted, sync state and recent errors,
//! devices and alerts, database health and sizes, disk space, recent log lines and the systemd
//! state of the service.
//!
//! It must never carry a secret: config secrets serialize as `"<redacted>"`, keys that name a
//! secret are blanked whatever their type, and every string of the bundle (log lines included)
//! goes through [`redact_text`], which removes bearer tokens, generated secrets (device
//! passwords, API and HQ tokens, session ids) and the value of any `key=value` whose key names a
//! secret (the setup code is logged as `setup_code=…`). docs/operations.md lists the contents.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Map, Value};

use crate::config::Config;

/// Format version of the bundle (bumped when a field changes meaning).
pub const FORMAT: u32 = 1;
/// Log lines kept from the newest log files.
pub const LOG_LINES: usize = 200;
/// Warning and error lines kept.
pub const ERROR_LINES: usize = 50;
const REDACTED: &str = "<redacted>";

/// Makes the bundle. `conn` is a connection to the store database (None: it could not be opened,
/// and `db_error` says why); `live` is what only the running server knows (sync link, MQTT
/// connections, uptime), absent when the CLI makes the bundle.
pub fn bundle(
    config: &Config,
    conn: Result<&Connection, String>,
    made_by: &str,
    now: jiff::Timestamp,
    live: Option<Value>,
) -> Value {
    let db_path = config.db_path();
    let mut b = json!({
        "bundle": "storebox support bundle",
        "format": FORMAT,
        "made_at": now.to_string(),
        "made_by": made_by,
        "build": build(),
        "host": host(),
        "store": {"id": config.store.id, "name": config.store.name,
                  "timezone": config.store.timezone, "currency": config.store.currency},
        "config": config_redacted(config),
        "live": live.unwrap_or(Value::Null),
        "disk": {
            "data_dir": disk(&config.storage.data_dir),
            "log_dir": disk(&config.log_dir()),
        },
        "logs": logs(&config.log_dir()),
        "systemd": systemd(),
    });
    let now_ms = now.as_millisecond();
    let from_db = match conn {
        Ok(c) => json!({
            "database": section(database(c, &db_path)),
            "sync": section(sync(c)),
            "devices": section(devices(c)),
            "alerts": section(alerts(c, now_ms)),
            "audit_recent": section(audit_recent(c)),
        }),
        Err(e) => json!({"database": {"path": db_path, "error": e}}),
    };
    if let (Value::Object(b), Value::Object(d)) = (&mut b, from_db) {
        b.extend(d);
    }
    redact_value(&mut b);
    b
}

/// The bundle as the CLI makes it (no live state), as pretty JSON.
pub fn make_text(config: &Config, made_by: &str) -> String {
    let conn = open_read_only(&config.db_path());
    let b = bundle(
        config,
        conn.as_ref().map_err(Clone::clone),
        made_by,
        jiff::Timestamp::now(),
        None,
    );
    serde_json::to_string_pretty(&b).unwrap_or_default()
}

/// Writes `bytes` to a new file readable by its owner only (the bundle names devices and hosts).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Opens the store database read-only for the bundle (no migration, no write; works while the
/// server runs).
pub fn open_read_only(path: &Path) -> Result<Connection, String> {
    if !path.exists() {
        return Err(format!("{} does not exist", path.display()));
    }
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let _ = c.busy_timeout(std::time::Duration::from_secs(5));
    Ok(c)
}

fn section(r: Result<Value, rusqlite::Error>) -> Value {
    r.unwrap_or_else(|e| json!({"error": e.to_string()}))
}

fn build() -> Value {
    json!({
        "version": crate::VERSION,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "target": format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
    })
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn host() -> Value {
    let os = read_trim("/etc/os-release").and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
    });
    let uptime_s = read_trim("/proc/uptime")
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map(|s| s as u64);
    let mem = read_trim("/proc/meminfo").map(|s| {
        s.lines()
            .filter(|l| l.starts_with("MemTotal:") || l.starts_with("MemAvailable:"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    });
    json!({
        "hostname": read_trim("/proc/sys/kernel/hostname"),
        "kernel": read_trim("/proc/sys/kernel/osrelease"),
        "os": os,
        "uptime_s": uptime_s,
        "load": read_trim("/proc/loadavg"),
        "memory": mem,
        "pid": std::process::id(),
        "working_dir": std::env::current_dir().ok(),
    })
}

/// The effective config (defaults, file and environment merged), secrets redacted. The HQ server
/// section is left out: it is not the store's.
pub fn config_redacted(config: &Config) -> Value {
    let mut v = serde_json::to_value(config).unwrap_or_else(|e| json!({"error": e.to_string()}));
    if let Value::Object(m) = &mut v {
        m.remove("hq_server");
    }
    redact_value(&mut v);
    v
}

fn disk(path: &Path) -> Value {
    match nix::sys::statvfs::statvfs(path) {
        Ok(s) => {
            // The field types differ between targets (u64 here, u32 on some).
            #[allow(clippy::unnecessary_cast)]
            let (f, blocks, avail, inodes) = (
                s.fragment_size() as u64,
                s.blocks() as u64,
                s.blocks_available() as u64,
                s.files_available() as u64,
            );
            let (total, avail) = (blocks * f, avail * f);
            json!({"path": path, "total_bytes": total, "available_bytes": avail,
                   "used_percent": ((total - avail) * 100).checked_div(total).unwrap_or(0),
                   "inodes_available": inodes})
        }
        Err(e) => json!({"path": path, "error": e.to_string()}),
    }
}

fn file_len(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn database(c: &Connection, path: &Path) -> Result<Value, rusqlite::Error> {
    let mut stmt = c.prepare("PRAGMA quick_check")?;
    let check: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .take(20)
        .collect::<Result<_, _>>()?;
    let pragma = |name: &str| -> Result<Value, rusqlite::Error> {
        c.query_row(&format!("PRAGMA {name}"), [], |r| {
            r.get::<_, rusqlite::types::Value>(0)
        })
        .map(|v| match v {
            rusqlite::types::Value::Integer(i) => json!(i),
            rusqlite::types::Value::Text(t) => json!(t),
            _ => Value::Null,
        })
    };
    let mut rows = Map::new();
    for table in [
        "items",
        "prices",
        "promotions",
        "checkouts",
        "devices",
        "alerts",
        "telemetry",
        "device_events",
        "dead_letters",
        "outbox",
        "tickets",
        "audit",
        "users",
    ] {
        let n: Result<i64, _> =
            c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0));
        rows.insert(table.into(), n.map_or(Value::Null, |n| json!(n)));
    }
    Ok(json!({
        "path": path,
        "quick_check": if check == ["ok"] { json!("ok") } else { json!(check) },
        "file_bytes": file_len(path),
        "wal_bytes": file_len(&with_suffix(path, "-wal")),
        "shm_bytes": file_len(&with_suffix(path, "-shm")),
        "page_size": pragma("page_size")?,
        "page_count": pragma("page_count")?,
        "freelist_count": pragma("freelist_count")?,
        "journal_mode": pragma("journal_mode")?,
        "user_version": pragma("user_version")?,
        "rows": rows,
    }))
}

fn sync(c: &Connection) -> Result<Value, rusqlite::Error> {
    let (business, telemetry) = crate::outbox::depth(c).map_err(db_err)?;
    let mut stmt = c.prepare(
        "SELECT at_ms, actor, action, target, detail FROM audit
         WHERE action LIKE 'sync%' ORDER BY id DESC LIMIT 20",
    )?;
    let milestones: Vec<Value> = stmt.query_map([], audit_row)?.collect::<Result<_, _>>()?;
    Ok(json!({
        "cursor": crate::sync::apply::cursor(c).map_err(db_err)?,
        "outbox": {"business": business, "telemetry": telemetry},
        "outbox_dropped": crate::outbox::dropped_total(c).map_err(db_err)?,
        "quarantined": crate::sync::apply::quarantined(c).map_err(db_err)?,
        "milestones": milestones,
    }))
}

fn db_err(e: crate::db::DbError) -> rusqlite::Error {
    match e {
        crate::db::DbError::Sqlite(e) => e,
        other => rusqlite::Error::ToSqlConversionFailure(other.to_string().into()),
    }
}

fn audit_row(r: &rusqlite::Row) -> rusqlite::Result<Value> {
    Ok(json!({
        "at": crate::db::ts_from_ms(r.get(0)?).to_string(),
        "actor": r.get::<_, String>(1)?,
        "action": r.get::<_, String>(2)?,
        "target": r.get::<_, String>(3)?,
        "detail": r.get::<_, String>(4)?,
    }))
}

fn audit_recent(c: &Connection) -> Result<Value, rusqlite::Error> {
    let mut stmt = c.prepare(
        "SELECT at_ms, actor, action, target, detail FROM audit ORDER BY id DESC LIMIT 30",
    )?;
    let rows: Vec<Value> = stmt.query_map([], audit_row)?.collect::<Result<_, _>>()?;
    Ok(json!(rows))
}

fn devices(c: &Connection) -> Result<Value, rusqlite::Error> {
    let mut stmt = c.prepare(
        "SELECT kind, count(*), coalesce(sum(online), 0) FROM devices GROUP BY kind ORDER BY kind",
    )?;
    let by_kind: Map<String, Value> = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                json!({"total": r.get::<_, i64>(1)?, "online": r.get::<_, i64>(2)?}),
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = c.prepare(
        "SELECT id, kind, last_seen_ms FROM devices WHERE online = 0 ORDER BY id LIMIT 100",
    )?;
    let offline: Vec<Value> = stmt
        .query_map([], |r| {
            let seen: Option<i64> = r.get(2)?;
            Ok(
                json!({"id": r.get::<_, String>(0)?, "kind": r.get::<_, String>(1)?,
                      "last_seen": seen.map(|ms| crate::db::ts_from_ms(ms).to_string())}),
            )
        })?
        .collect::<Result<_, _>>()?;
    let (total, online): (i64, i64) = c.query_row(
        "SELECT count(*), coalesce(sum(online), 0) FROM devices",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(json!({"total": total, "online": online, "by_kind": by_kind, "offline": offline}))
}

fn alerts(c: &Connection, now_ms: i64) -> Result<Value, rusqlite::Error> {
    let open: i64 = c.query_row(
        "SELECT count(*) FROM alerts WHERE cleared_ms IS NULL",
        [],
        |r| r.get(0),
    )?;
    let mut stmt = c.prepare(
        "SELECT raised_ms, device_id, code, severity, message FROM alerts
         WHERE cleared_ms IS NULL ORDER BY raised_ms DESC LIMIT 50",
    )?;
    let recent: Vec<Value> = stmt
        .query_map([], |r| {
            Ok(
                json!({"raised_at": crate::db::ts_from_ms(r.get(0)?).to_string(),
                      "device": r.get::<_, String>(1)?, "code": r.get::<_, String>(2)?,
                      "severity": r.get::<_, String>(3)?, "message": r.get::<_, String>(4)?}),
            )
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = c.prepare(
        "SELECT received_ms, coalesce(device_id, ''), topic, reason FROM dead_letters
         WHERE received_ms > ?1 ORDER BY id DESC LIMIT 20",
    )?;
    let rejected: Vec<Value> = stmt
        .query_map([now_ms - 86_400_000], |r| {
            Ok(json!({"at": crate::db::ts_from_ms(r.get(0)?).to_string(),
                      "device": r.get::<_, String>(1)?, "topic": r.get::<_, String>(2)?,
                      "reason": r.get::<_, String>(3)?}))
        })?
        .collect::<Result<_, _>>()?;
    Ok(json!({"open": open, "open_recent": recent, "rejected_messages_24h": rejected}))
}

/// The last `max_bytes` of a file, from its first whole line.
fn tail(path: &Path, max_bytes: u64) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(max_bytes);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(max_bytes).read_to_end(&mut buf)?;
    let mut s = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        s = s
            .split_once('\n')
            .map(|(_, r)| r.to_string())
            .unwrap_or_default();
    }
    Ok(s)
}

fn logs(dir: &Path) -> Value {
    let mut files: Vec<(String, u64)> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (name.starts_with("storebox") && name.contains(".log"))
                    .then(|| (name, e.metadata().map(|m| m.len()).unwrap_or(0)))
            })
            .collect(),
        Err(e) => return json!({"dir": dir, "error": e.to_string()}),
    };
    // Daily files are named prefix.YYYY-MM-DD.log: name order is time order.
    files.sort();
    let mut lines: Vec<String> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for (name, _) in files.iter().rev().take(2) {
        let text = tail(&dir.join(name), 512 * 1024).unwrap_or_default();
        let file_lines: Vec<String> = text.lines().map(str::to_string).collect();
        let mut file_errors: Vec<String> = file_lines
            .iter()
            .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
            .cloned()
            .collect();
        file_errors.append(&mut errors);
        errors = file_errors;
        let mut file_lines = file_lines;
        file_lines.append(&mut lines);
        lines = file_lines;
        if lines.len() >= LOG_LINES && errors.len() >= ERROR_LINES {
            break;
        }
    }
    let keep_last = |v: Vec<String>, n: usize| -> Vec<String> {
        let skip = v.len().saturating_sub(n);
        v.into_iter().skip(skip).collect()
    };
    json!({
        "dir": dir,
        "files": files.iter().map(|(n, l)| json!({"name": n, "bytes": l})).collect::<Vec<_>>(),
        "recent_errors": keep_last(errors, ERROR_LINES),
        "recent": keep_last(lines, LOG_LINES),
    })
}

/// The service's state from systemd, when the machine runs systemd and has a storebox unit.
fn systemd() -> Value {
    if !Path::new("/run/systemd/system").is_dir() {
        return json!({"present": false});
    }
    let out = std::process::Command::new("systemctl")
        .args([
            "show",
            "storebox.service",
            "--no-pager",
            "--property=LoadState,ActiveState,SubState,Result,NRestarts,MainPID,\
             ExecMainStartTimestamp,ActiveEnterTimestamp,WatchdogTimestamp,MemoryCurrent,\
             TasksCurrent,UnitFileState,FragmentPath",
        ])
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let props: Map<String, Value> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
            json!({"present": true, "under_systemd": std::env::var_os("INVOCATION_ID").is_some(),
                   "unit": props})
        }
        Ok(o) => json!({"present": true, "error": String::from_utf8_lossy(&o.stderr).trim()}),
        Err(e) => json!({"present": true, "error": format!("systemctl: {e}")}),
    }
}

/// Does this key name a secret (`token`, `password`, `secret`, `setup_code`, `session`, …)? Keys
/// of paths to secret files (`*_file`) and public keys are not secrets.
fn secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    if k.ends_with("_file") || k.ends_with("file") || k == "public_key" {
        return false;
    }
    [
        "token",
        "password",
        "passwd",
        "secret",
        "setup_code",
        "session_id",
        "cookie",
        "csrf",
        "authorization",
        "api_key",
        "private_key",
        "database_url",
    ]
    .iter()
    .any(|w| k.contains(w))
        || k == "session"
        || k == "sid"
}

/// Redacts secrets from every string of `v`, and blanks any value whose key names a secret.
pub fn redact_value(v: &mut Value) {
    match v {
        Value::String(s) => {
            let r = redact_text(s);
            if r != *s {
                *s = r;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact_value),
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if secret_key(k) && !(v.is_null() || v.as_str().is_some_and(str::is_empty)) {
                    *v = json!(REDACTED);
                } else {
                    redact_value(v);
                }
            }
        }
        _ => {}
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// A run of word characters that looks like a generated secret: a storebox secret prefix
/// (`sbx_`, `sbhq_`, `sbhqa_`, `dev_`) followed by 16 or more characters, or 20 or more
/// characters mixing upper case, lower case and digits (base64url of random bytes). Hex hashes
/// and UUIDs (no upper case) and words stay.
fn looks_secret(w: &str) -> bool {
    for p in ["sbx_", "sbhq_", "sbhqa_", "dev_"] {
        if w.strip_prefix(p).is_some_and(|r| r.len() >= 16) {
            return true;
        }
    }
    w.len() >= 20
        && w.chars().any(|c| c.is_ascii_uppercase())
        && w.chars().any(|c| c.is_ascii_lowercase())
        && w.chars().any(|c| c.is_ascii_digit())
}

/// Removes secrets from a line of text: `Bearer …`, the value of `key=…` / `key: …` / `"key":"…"`
/// when the key names a secret, URL user info, and anything that [looks like a generated
/// secret](looks_secret).
pub fn redact_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut redact_next = false;
    let mut rest = s;
    while !rest.is_empty() {
        let start = rest.find(is_word_char).unwrap_or(rest.len());
        let (sep, tail) = rest.split_at(start);
        // URL user info: scheme://user:pass@host
        if let Some(i) = sep.find("://") {
            let after = &rest[sep.len()..];
            let end = after
                .find(|c: char| c == '/' || c.is_whitespace() || c == '"')
                .unwrap_or(after.len());
            if let Some(at) = after[..end].rfind('@') {
                out.push_str(&sep[..i + 3]);
                out.push_str(REDACTED);
                out.push('@');
                rest = &after[at + 1..];
                redact_next = false;
                continue;
            }
        }
        out.push_str(sep);
        if tail.is_empty() {
            break;
        }
        let end = tail.find(|c| !is_word_char(c)).unwrap_or(tail.len());
        let word = &tail[..end];
        rest = &tail[end..];
        let sep_trim = sep.trim();
        let value_position = redact_next
            && (sep_trim.is_empty()
                || sep_trim.ends_with('=')
                || sep_trim.ends_with(':')
                || sep_trim.ends_with("\":\"")
                || sep_trim.ends_with('"'));
        let scheme = word.eq_ignore_ascii_case("bearer") || word.eq_ignore_ascii_case("basic");
        if value_position && scheme {
            // `Authorization: Bearer …`: the secret is the next word.
            out.push_str(word);
            continue;
        }
        if value_position || looks_secret(word) {
            out.push_str(REDACTED);
            // A value quoted or spanning other characters (`setup_code="ab.cd"`): skip to the
            // next whitespace, comma or quote.
            if value_position {
                let stop = rest
                    .find(|c: char| c.is_whitespace() || c == ',' || c == '"' || c == '}')
                    .unwrap_or(rest.len());
                rest = &rest[stop..];
            }
            redact_next = false;
            continue;
        }
        // Only `key=value`, `key: value`, `"key":"value"` and `Bearer value` carry the secret in
        // the next word; a key name followed by prose does not.
        redact_next =
            scheme || (secret_key(word) && matches!(rest.chars().next(), Some('=' | ':' | '"')));
        out.push_str(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_secrets_in_text() {
        let cases = [
            (
                "INFO storebox::app: no staff user exists yet setup_code=Ab3dEfGh_jk1",
                "setup_code=<redacted>",
            ),
            (
                "Authorization: Bearer sbx_Qm9vYmFyYmF6cXV4cXV1eA",
                "Bearer <redacted>",
            ),
            ("password: hunter2hunter2", "password: <redacted>"),
            ("{\"token\":\"abc.def\"}", "{\"token\":\"<redacted>\"}"),
            (
                "device dev_kH8sL2mQ9xR4tV7wY1zA3bC5 ok",
                "device <redacted> ok",
            ),
            (
                "session 0Jc9xQ_mZ2aR7kLp4TnW8vYb6HdE3fGs",
                "session <redacted>",
            ),
            (
                "url https://user:pa55@hq.example.net/sync",
                "url https://<redacted>@hq.example.net/sync",
            ),
        ];
        for (input, want) in cases {
            let got = redact_text(input);
            assert!(got.contains(want), "{input:?} -> {got:?}, want {want:?}");
        }
        for (input, secret) in [
            ("setup_code=Ab3dEfGh_jk1", "Ab3dEfGh_jk1"),
            (
                "x sbhq_aaaaaaaaaaaaaaaaaaaaaa y",
                "sbhq_aaaaaaaaaaaaaaaaaaaaaa",
            ),
        ] {
            assert!(!redact_text(input).contains(secret), "{input}");
        }
    }

    #[test]
    fn keeps_what_support_needs() {
        for s in [
            "2026-11-30T09:00:00.123456Z  WARN storebox::sync::client: HQ unreachable: connection refused",
            "checkout 6f1c2a9e-1b2c-4d5e-8f90-0a1b2c3d4e5f priced",
            "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "the token was refused by HQ",
            "device lane-1 (lane) provisioned",
        ] {
            assert_eq!(redact_text(s), s);
        }
    }

    #[test]
    fn redacts_values_by_key() {
        let mut v = json!({"hq": {"token": "plain-word", "token_file": "/etc/storebox/hq.token",
                                  "url": "https://hq.example.net"},
                           "updates": {"public_key": "AAAA"}, "n": 3, "empty_token": ""});
        redact_value(&mut v);
        assert_eq!(v["hq"]["token"], REDACTED);
        assert_eq!(v["hq"]["token_file"], "/etc/storebox/hq.token");
        assert_eq!(v["hq"]["url"], "https://hq.example.net");
        assert_eq!(v["updates"]["public_key"], "AAAA");
        assert_eq!(v["empty_token"], "");
        let mut v = json!({"http": {"session_minutes": 480}, "session": "x", "session_id": "y"});
        redact_value(&mut v);
        assert_eq!(
            v,
            json!({"http": {"session_minutes": 480}, "session": REDACTED,
                             "session_id": REDACTED})
        );
    }
}
