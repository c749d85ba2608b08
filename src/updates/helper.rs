//! The root update helper, `storebox updater apply` (DESIGN §7, docs/releases.md "Store ↔ root
//! helper"). The sandboxed store service cannot install packages; it writes
//! `<data_dir>/updates/request.json` and `storebox-updater.path` starts this helper as root, in its
//! own unit (`storebox-updater.service`, outside storebox's cgroup: restarting storebox cannot kill
//! dpkg). The helper trusts nothing in the request: it copies the package and manifest into its
//! own root-only directory and verifies them there against the public key of the root-owned
//! config, refuses a serial not above the last one it tried, keeps the running version's package
//! and a database backup, installs, restarts storebox and watches it through probation; when
//! storebox does not stay up it restores the kept package and data itself.
//!
//! Every step that changes the system is written first to a journal in the helper's state
//! directory (`/var/lib/storebox-updater/journal.json`), so that a power loss or a kill mid-install
//! is repaired on the next start ([`recovery`]): before dpkg ran, storebox is started again on the
//! untouched version; once dpkg ran, `dpkg --configure -a` and then a rollback to the kept package
//! and backup. The path unit watches the journal too, so after a power loss it starts the helper
//! again at boot.
//!
//! The pure parts — request parsing and validation ([`parse_request`]), the recovery decision
//! ([`recovery`]), the package file names — are unit-tested; the system parts (systemctl, dpkg)
//! are proved by the install test in systemd-nspawn (tests/install/run.sh).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::config::Config;
use crate::proto::release::{parse_public_key, Manifest};

/// The helper's root-only state directory (the unit's `StateDirectory=storebox-updater`).
pub const STATE_DIR: &str = "/var/lib/storebox-updater";
/// Where apt keeps the packages it downloaded: the running version's package may be there.
pub const APT_ARCHIVES: &str = "/var/cache/apt/archives";
/// The package the helper installs and the unit it restarts.
pub const PACKAGE: &str = "storebox";
const UNIT: &str = "storebox.service";

/// Bounds on what the helper reads from the store's side.
pub const MAX_REQUEST_BYTES: u64 = 16 * 1024;
pub const MAX_MANIFEST_BYTES: u64 = 16 * 1024;
pub const MAX_PACKAGE_BYTES: u64 = 512 * 1024 * 1024;
/// Probation bounds (seconds) a request may ask for.
pub const MIN_PROBATION_SECS: u64 = 5;
pub const MAX_PROBATION_SECS: u64 = 3600;
const MAX_TEXT: usize = 128;
const MAX_REASON: usize = 1024;
/// Packages and backups kept besides those the last install needs.
const KEEP: usize = 3;

/// Time limits of the external commands.
const DPKG_TIMEOUT: Duration = Duration::from_secs(600);
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(150);
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("request.json: {0}")]
    Request(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("`{command}` failed: {reason}")]
    Command { command: String, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Probation(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HelperError {
    let what = what.into();
    move |source| HelperError::Io { what, source }
}

// ---------------------------------------------------------------------------------------------
// The file protocol.

pub use super::protocol::{Action, Outcome as HelperResult, OutcomeKind as Outcome, Request};

/// A Debian version as dpkg accepts it (epoch, upstream, revision characters only).
pub fn valid_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_TEXT
        && v.as_bytes()[0].is_ascii_digit()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+~:-".contains(&b))
}

fn inside(dir: &Path, p: &Path) -> bool {
    p.is_absolute()
        && p.starts_with(dir)
        && p.components().all(|c| !matches!(c, Component::ParentDir))
        && p != dir
}

/// Parses and validates `request.json` (at most [`MAX_REQUEST_BYTES`]); package and manifest
/// must be files inside `updates_dir`, the probation within bounds, the version a Debian version.
pub fn parse_request(bytes: &[u8], updates_dir: &Path) -> Result<Request, HelperError> {
    if bytes.len() as u64 > MAX_REQUEST_BYTES {
        return Err(HelperError::Request(format!(
            "{} bytes, at most {MAX_REQUEST_BYTES}",
            bytes.len()
        )));
    }
    let req: Request =
        serde_json::from_slice(bytes).map_err(|e| HelperError::Request(e.to_string()))?;
    if !valid_version(req.version()) {
        return Err(HelperError::Request(format!(
            "`version` {:?} is not a Debian version (digits first; letters, digits and .+~:- only; at most {MAX_TEXT} bytes)",
            req.version()
        )));
    }
    match &req {
        Request::Install {
            rollout,
            package,
            manifest,
            probation_seconds,
            ..
        } => {
            if rollout.len() > MAX_TEXT || rollout.chars().any(char::is_control) {
                return Err(HelperError::Request(format!(
                    "`rollout` must be at most {MAX_TEXT} bytes without control characters"
                )));
            }
            for (field, p) in [("package", package), ("manifest", manifest)] {
                if !inside(updates_dir, p) {
                    return Err(HelperError::Request(format!(
                        "`{field}` {} must be an absolute path inside {}",
                        p.display(),
                        updates_dir.display()
                    )));
                }
            }
            if !(MIN_PROBATION_SECS..=MAX_PROBATION_SECS).contains(probation_seconds) {
                return Err(HelperError::Request(format!(
                    "`probation_seconds` {probation_seconds} is outside {MIN_PROBATION_SECS}..={MAX_PROBATION_SECS}"
                )));
            }
        }
        Request::Rollback { reason, .. } => {
            if reason.len() > MAX_REASON {
                return Err(HelperError::Request(format!(
                    "`reason` is longer than {MAX_REASON} bytes"
                )));
            }
        }
    }
    Ok(req)
}

/// The `action` of a request that did not parse, for its result (install when unknown).
fn action_of_unparsed(bytes: &[u8]) -> (Action, String) {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    let action = match v.get("action").and_then(|a| a.as_str()) {
        Some("rollback") => Action::Rollback,
        _ => Action::Install,
    };
    let version = v
        .get("version")
        .and_then(|a| a.as_str())
        .filter(|s| valid_version(s))
        .unwrap_or("")
        .to_string();
    (action, version)
}

// ---------------------------------------------------------------------------------------------
// The helper's own records.

/// Where the install in progress is; written before each step that changes the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Package verified and kept; storebox may be stopped, the backup may be incomplete.
    Prepared,
    /// The database backup is complete; nothing installed yet.
    BackedUp,
    /// dpkg started on the new package.
    Installing,
    /// The new version is installed and being watched.
    Probation,
    /// Restoring the previous package and data.
    RollingBack,
    /// Finished; the result below is to be (re)written.
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub action: Action,
    pub version: String,
    pub previous_version: String,
    pub previous_package: PathBuf,
    pub backup: PathBuf,
    pub phase: Phase,
    pub started_at: Timestamp,
    /// Set in [`Phase::Done`] and [`Phase::RollingBack`] (why).
    #[serde(default)]
    pub outcome: Option<Outcome>,
    #[serde(default)]
    pub reason: String,
}

/// What the next start does with a journal left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Nothing was installed: start storebox again on the untouched version; outcome `failed`.
    StartAgain { reason: String },
    /// dpkg ran (or a rollback was under way): `dpkg --configure -a`, then restore the kept
    /// package and backup; outcome `rolled_back`.
    RollBack { reason: String },
    /// The work was done; only the result is left to write.
    Report { outcome: Outcome, reason: String },
}

/// The decision from a journal found at start (the helper was killed or the power failed).
pub fn recovery(j: &Journal) -> Recovery {
    let what = format!(
        "the helper was interrupted (power loss or kill) during {:?} of {} in phase {:?}",
        j.action, j.version, j.phase
    );
    match j.phase {
        Phase::Prepared | Phase::BackedUp => Recovery::StartAgain {
            reason: format!(
                "{what}; nothing was installed, {} started again",
                j.previous_version
            ),
        },
        Phase::Installing | Phase::Probation => Recovery::RollBack {
            reason: format!("{what}, after dpkg had started"),
        },
        Phase::RollingBack => Recovery::RollBack {
            reason: if j.reason.is_empty() {
                format!("{what}, during its rollback")
            } else {
                format!("{}; the rollback was interrupted and done again", j.reason)
            },
        },
        Phase::Done => Recovery::Report {
            outcome: j.outcome.unwrap_or(Outcome::Failed),
            reason: j.reason.clone(),
        },
    }
}

/// The helper's durable record: the last serial it tried and the last install it completed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelperState {
    pub last_serial: Option<u64>,
    pub last_install: Option<InstallRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallRecord {
    pub version: String,
    pub previous_version: String,
    pub previous_package: PathBuf,
    pub backup: PathBuf,
    pub installed_at: Timestamp,
}

/// `storebox_<version>_<arch>.deb` as apt names it (`:` of an epoch as `%3a`).
pub fn apt_file_prefix(version: &str) -> String {
    format!("{PACKAGE}_{}_", version.replace(':', "%3a"))
}

/// Where the helper keeps a version's package.
pub fn kept_package(state_dir: &Path, version: &str) -> PathBuf {
    state_dir
        .join("packages")
        .join(format!("{}amd64.deb", apt_file_prefix(version)))
}

// ---------------------------------------------------------------------------------------------
// The system side.

/// Paths the helper works on; [`Paths::from_config`] for the real box.
#[derive(Debug, Clone)]
pub struct Paths {
    pub state_dir: PathBuf,
    pub updates_dir: PathBuf,
    pub data_dir: PathBuf,
    pub db: PathBuf,
    pub apt_archives: PathBuf,
}

impl Paths {
    pub fn from_config(config: &Config) -> Paths {
        Paths {
            state_dir: PathBuf::from(STATE_DIR),
            updates_dir: config.storage.data_dir.join("updates"),
            data_dir: config.storage.data_dir.clone(),
            db: config.db_path(),
            apt_archives: PathBuf::from(APT_ARCHIVES),
        }
    }
    fn journal(&self) -> PathBuf {
        self.state_dir.join("journal.json")
    }
    fn state(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }
    fn request(&self) -> PathBuf {
        self.updates_dir.join("request.json")
    }
    fn result(&self) -> PathBuf {
        self.updates_dir.join("result.json")
    }
    fn last_result(&self) -> PathBuf {
        self.state_dir.join("last-result.json")
    }
}

/// Runs a command with a time limit; its stdout, or an error with the tail of its stderr.
fn run(program: &str, args: &[&str], timeout: Duration) -> Result<String, HelperError> {
    let command = format!("{program} {}", args.join(" "));
    tracing::info!(%command, "running");
    let fail = |reason: String| HelperError::Command {
        command: command.clone(),
        reason,
    };
    let mut child = Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot start it: {e}")))?;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.take(1 << 20).read_to_end(&mut v);
        }
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.take(1 << 20).read_to_end(&mut v);
        }
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(fail(format!("waiting for it: {e}"))),
        }
    };
    let stdout = String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
    let tail = tail(&stderr, 800);
    match status {
        None => Err(fail(format!(
            "timed out after {} s; stderr: {tail}",
            timeout.as_secs()
        ))),
        Some(s) if !s.success() => Err(fail(format!("{s}; stderr: {tail}"))),
        Some(_) => Ok(stdout),
    }
}

fn tail(s: &str, max: usize) -> String {
    let s = s.trim();
    let start = s.len().saturating_sub(max);
    let start = (start..=s.len())
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(s.len());
    s[start..].replace('\n', " | ")
}

/// dpkg without questions: an admin's edited conffile is kept, the package's new default is saved
/// next to it as `.dpkg-dist` (there is no terminal to ask on).
fn dpkg(args: &[&str]) -> Result<String, HelperError> {
    let mut all = vec!["--force-confdef", "--force-confold"];
    all.extend_from_slice(args);
    run("dpkg", &all, DPKG_TIMEOUT)
}

fn unit_prop(prop: &str) -> Result<String, HelperError> {
    Ok(run(
        "systemctl",
        &["show", "-p", prop, "--value", UNIT],
        QUERY_TIMEOUT,
    )?
    .trim()
    .to_string())
}

fn installed_version() -> Result<String, HelperError> {
    Ok(run(
        "dpkg-query",
        &["-W", "-f=${Version}", PACKAGE],
        QUERY_TIMEOUT,
    )?
    .trim()
    .to_string())
}

/// Reads a regular file (never through a symlink) of at most `max` bytes.
fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, HelperError> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(io(format!("opening {}", path.display())))?;
    let meta = f
        .metadata()
        .map_err(io(format!("reading {}", path.display())))?;
    if !meta.is_file() {
        return Err(HelperError::Refused(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if meta.len() > max {
        return Err(HelperError::Refused(format!(
            "{} is {} bytes, at most {max}",
            path.display(),
            meta.len()
        )));
    }
    let mut v = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut v)
        .map_err(io(format!("reading {}", path.display())))?;
    if v.len() as u64 > max {
        return Err(HelperError::Refused(format!(
            "{} grew past {max} bytes",
            path.display()
        )));
    }
    Ok(v)
}

/// Writes `bytes` to `path` atomically (a fresh temporary name, fsync, rename); the file gets
/// `mode` and, when given, that owner. Never follows a symlink an unprivileged user planted.
fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), HelperError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
    let what = format!("writing {}", path.display());
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(io(what.clone()))?;
    let res = (|| {
        f.write_all(bytes)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.map_err(io(what))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The file in a backup directory that records the outbox's high-water mark of the database the
/// backup replaced (so that a restore done again after an interruption still knows it).
const OUTBOX_MARK: &str = "outbox-seq";

/// The highest outbox sequence number `db` ever handed out (AUTOINCREMENT's `sqlite_sequence`, or
/// the highest row). None: no such file, or not readable as a store database.
fn outbox_high_water(db: &Path) -> Option<i64> {
    if !db.is_file() {
        return None;
    }
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
            .ok()?;
    conn.query_row(
        "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0),
                    coalesce((SELECT max(seq) FROM outbox), 0))",
        [],
        |r| r.get(0),
    )
    .map_err(|e| tracing::warn!(db = %db.display(), error = %e, "reading the outbox sequence"))
    .ok()
}

/// Raises the outbox's AUTOINCREMENT counter of `db` to at least `at_least`.
fn raise_outbox_seq(db: &Path, at_least: i64) -> rusqlite::Result<()> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    let updated = conn.execute(
        "UPDATE sqlite_sequence SET seq = max(seq, ?1) WHERE name = 'outbox'",
        [at_least],
    )?;
    if updated == 0 {
        conn.execute(
            "INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?1)",
            [at_least],
        )?;
    }
    conn.close().map_err(|(_, e)| e)
}

/// The file in a backup directory that keeps the replaced database's unsent outbox entries
/// between reading them and writing them into the restored database.
const OUTBOX_CARRY: &str = "outbox-unsent.json";

/// Most unsent outbox entries carried into a restored database (the newest: those queued after
/// the backup are the newest; older unsent ones are in the backup anyway).
const CARRY_MAX: i64 = 100_000;

/// One outbox row, as carried over: seq, id, type, class, payload, created_ms, sent_ms.
type OutboxRow = (i64, String, String, String, String, i64, Option<i64>);

/// The unsent outbox entries of `db` (newest [`CARRY_MAX`]); empty if it cannot be read.
fn unsent_outbox(db: &Path) -> Vec<OutboxRow> {
    if !db.is_file() {
        return Vec::new();
    }
    let read = || -> rusqlite::Result<Vec<OutboxRow>> {
        let conn =
            rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        let mut stmt = conn.prepare(
            "SELECT seq, id, type, class, payload, created_ms, sent_ms FROM outbox
             WHERE sent_ms IS NULL ORDER BY seq DESC LIMIT ?1",
        )?;
        let rows = stmt
            .query_map([CARRY_MAX], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })?
            .collect();
        rows
    };
    read().unwrap_or_else(|e| {
        tracing::warn!(db = %db.display(), error = %e, "reading the unsent outbox; nothing carried over");
        Vec::new()
    })
}

/// Writes `rows` into the outbox of `db` where their seq and id are free (an entry that was in
/// the backup too is there already).
fn carry_outbox(db: &Path, rows: &[OutboxRow]) -> rusqlite::Result<usize> {
    let mut conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    let tx = conn.transaction()?;
    let mut n = 0;
    {
        let mut ins = tx.prepare(
            "INSERT OR IGNORE INTO outbox (seq, id, type, class, payload, created_ms, sent_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for r in rows {
            n += ins.execute(rusqlite::params![r.0, r.1, r.2, r.3, r.4, r.5, r.6])?;
        }
    }
    tx.commit()?;
    conn.close().map_err(|(_, e)| e)?;
    Ok(n)
}

/// Puts the database backup in `backup` in place of `db`, owned by `owner`, and carries the
/// outbox's sequence over: HQ stores store events once per `(store, seq)` (docs/sync-protocol.md),
/// and the version being rolled back may have pushed events numbered after the backup (its
/// `probation`, `failed`, sales during probation). Restored as it was, the database would number
/// its next events (`rolled_back`, the next sales) with those same seqs, and HQ would drop them
/// as duplicates. So the restored outbox continues after the highest seq the replaced database
/// had handed out (recorded in the backup directory first, so a restore done again after an
/// interruption still continues after it). And the replaced database's unsent outbox entries
/// (what HQ has not acknowledged yet) are carried into the restored one, keeping their seqs:
/// nothing the store queued for HQ is lost with the version.
fn restore_database(db: &Path, backup: &Path, owner: (u32, u32)) -> Result<(), HelperError> {
    if !backup.join("storebox.db").is_file() {
        return Err(HelperError::Refused(format!(
            "no database backup in {}",
            backup.display()
        )));
    }
    let mark = backup.join(OUTBOX_MARK);
    let recorded = fs::read_to_string(&mark)
        .ok()
        .and_then(|t| t.trim().parse::<i64>().ok());
    let high_water = outbox_high_water(db).max(recorded);
    if let Some(hw) = high_water.filter(|hw| Some(*hw) != recorded) {
        write_atomic(&mark, format!("{hw}\n").as_bytes(), 0o600, None)?;
    }
    // What the replaced version queued and HQ has not acknowledged (sales during probation, its
    // release.status reports) must not go with it: kept next to the backup before the database
    // is removed, written into the restored one below.
    let carry_file = backup.join(OUTBOX_CARRY);
    let carried: Vec<OutboxRow> = match fs::read(&carry_file) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
        Err(_) => {
            let rows = unsent_outbox(db);
            let text = serde_json::to_vec(&rows).unwrap_or_default();
            write_atomic(&carry_file, &text, 0o600, None)?;
            rows
        }
    };
    for suffix in ["-wal", "-shm", ""] {
        let p = PathBuf::from(format!("{}{suffix}", db.display()));
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("removing {}", p.display()))(e)),
        }
    }
    for suffix in ["", "-wal"] {
        let from = backup.join(format!("storebox.db{suffix}"));
        if !from.exists() {
            continue;
        }
        let to = PathBuf::from(format!("{}{suffix}", db.display()));
        copy_in(&from, &to, u64::MAX / 2)?;
    }
    if !carried.is_empty() {
        let n = carry_outbox(db, &carried).map_err(|e| HelperError::Io {
            what: format!(
                "carrying {} unsent outbox entries over to the restored {}",
                carried.len(),
                db.display()
            ),
            source: std::io::Error::other(e),
        })?;
        tracing::info!(
            carried = n,
            unsent = carried.len(),
            "unsent events of the replaced version carried into the restored database"
        );
    }
    if let Some(hw) = high_water {
        raise_outbox_seq(db, hw).map_err(|e| HelperError::Io {
            what: format!(
                "carrying the outbox sequence ({hw}) over to the restored {}",
                db.display()
            ),
            source: std::io::Error::other(e),
        })?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let to = PathBuf::from(format!("{}{suffix}", db.display()));
        if to.exists() {
            std::os::unix::fs::chown(&to, Some(owner.0), Some(owner.1))
                .map_err(io(format!("chown {}", to.display())))?;
        }
    }
    Ok(())
}

/// Copies a file (not through a symlink, at most `max` bytes) into the helper's directory.
fn copy_in(from: &Path, to: &Path, max: u64) -> Result<(), HelperError> {
    let mut src = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(from)
        .map_err(io(format!("opening {}", from.display())))?;
    let meta = src
        .metadata()
        .map_err(io(format!("reading {}", from.display())))?;
    if !meta.is_file() || meta.len() > max {
        return Err(HelperError::Refused(format!(
            "{} must be a regular file of at most {max} bytes",
            from.display()
        )));
    }
    let _ = fs::remove_file(to);
    let what = format!("copying {} to {}", from.display(), to.display());
    let mut dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(to)
        .map_err(io(what.clone()))?;
    let n = std::io::copy(&mut (&mut src).take(max + 1), &mut dst).map_err(io(what.clone()))?;
    if n > max {
        return Err(HelperError::Refused(format!(
            "{} grew past {max} bytes",
            from.display()
        )));
    }
    dst.sync_all().map_err(io(what))?;
    Ok(())
}

fn load_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, HelperError> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| HelperError::Io {
                what: format!("reading {}", path.display()),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(format!("reading {}", path.display()))(e)),
    }
}

fn save_json<T: Serialize>(path: &Path, v: &T) -> Result<(), HelperError> {
    let mut bytes = serde_json::to_vec_pretty(v).unwrap_or_default();
    bytes.push(b'\n');
    write_atomic(path, &bytes, 0o600, None)
}

/// Test hook for the install test's power-loss check: with
/// `STOREBOX_UPDATER_TEST_HOOK=stall-after-unpack` the helper stops for 10 minutes between
/// `dpkg --unpack` and `dpkg --configure` (the package is half installed), so that the test can
/// kill it there. Never set on a store.
fn test_hook_stall_after_unpack() {
    if std::env::var("STOREBOX_UPDATER_TEST_HOOK").as_deref() == Ok("stall-after-unpack") {
        tracing::warn!("test hook: stalling after dpkg --unpack");
        std::thread::sleep(Duration::from_secs(600));
    }
}

/// `storebox updater apply`: repair after an interruption, else carry out `request.json` if
/// there is one. Writes `result.json` for every request it consumed.
pub fn apply(config: &Config, paths: &Paths, clock: &dyn Clock) -> Result<(), HelperError> {
    for d in ["", "packages", "backups", "incoming"] {
        let p = paths.state_dir.join(d);
        fs::create_dir_all(&p).map_err(io(format!("creating {}", p.display())))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o700))
            .map_err(io(format!("chmod {}", p.display())))?;
    }
    // One helper at a time (the unit is a oneshot, but an admin may also run it by hand).
    let lock_path = paths.state_dir.join("lock");
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io(format!("opening {}", lock_path.display())))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| {
            HelperError::Refused(format!(
                "another helper holds {} ({e}); not starting a second one",
                lock_path.display()
            ))
        })?;
    let mut h = Helper {
        config,
        paths,
        clock,
    };
    if let Some(journal) = load_json::<Journal>(&paths.journal())? {
        tracing::warn!(?journal, "found an unfinished journal; repairing");
        let res = h.recover(journal)?;
        h.finish(res)?;
        return Ok(());
    }
    let bytes = match read_bounded(&paths.request(), MAX_REQUEST_BYTES) {
        Ok(b) => b,
        Err(HelperError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!("no request");
            return Ok(());
        }
        Err(e) => {
            let res = h.result(Action::Install, "", Outcome::Failed, e.to_string(), "");
            return h.finish(res);
        }
    };
    let req = match parse_request(&bytes, &paths.updates_dir) {
        Ok(r) => r,
        Err(e) => {
            let (action, version) = action_of_unparsed(&bytes);
            let previous = installed_version().unwrap_or_default();
            let res = h.result(action, &version, Outcome::Failed, e.to_string(), &previous);
            return h.finish(res);
        }
    };
    tracing::info!(?req, "request");
    let res = match &req {
        Request::Install { .. } => h.install(&req),
        Request::Rollback {
            version, reason, ..
        } => h.rollback_request(version, reason),
    };
    let res = match res {
        Ok(r) => r,
        Err(e) => {
            let previous = installed_version().unwrap_or_default();
            h.result(
                req.action(),
                req.version(),
                Outcome::Failed,
                e.to_string(),
                &previous,
            )
        }
    };
    h.finish(res)
}

struct Helper<'a> {
    config: &'a Config,
    paths: &'a Paths,
    clock: &'a dyn Clock,
}

impl Helper<'_> {
    fn result(
        &self,
        action: Action,
        version: &str,
        outcome: Outcome,
        reason: String,
        previous: &str,
    ) -> HelperResult {
        HelperResult {
            action,
            version: version.to_string(),
            outcome,
            reason,
            previous_version: previous.to_string(),
            finished_at: self.clock.now(),
        }
    }

    /// Removes the request, writes `result.json` (owned by the data directory's owner), then
    /// removes the journal: after a crash in between, the journal (phase done; the path unit also
    /// watches it) writes the result again. The request goes first so that the store, which
    /// writes its next request only after reading the result, never has it removed.
    fn finish(&self, res: HelperResult) -> Result<(), HelperError> {
        tracing::info!(?res, "result");
        match fs::remove_file(self.paths.request()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("removing request.json")(e)),
        }
        let meta = fs::metadata(&self.paths.data_dir)
            .map_err(io(format!("reading {}", self.paths.data_dir.display())))?;
        let updates = &self.paths.updates_dir;
        match fs::symlink_metadata(updates) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(HelperError::Refused(format!(
                    "{} is not a directory",
                    updates.display()
                )))
            }
            Err(_) => {
                fs::create_dir(updates).map_err(io(format!("creating {}", updates.display())))?;
                std::os::unix::fs::chown(updates, Some(meta.uid()), Some(meta.gid()))
                    .map_err(io(format!("chown {}", updates.display())))?;
                fs::set_permissions(updates, fs::Permissions::from_mode(0o750))
                    .map_err(io(format!("chmod {}", updates.display())))?;
            }
        }
        let mut bytes = serde_json::to_vec_pretty(&res).unwrap_or_default();
        bytes.push(b'\n');
        write_atomic(
            &self.paths.result(),
            &bytes,
            0o640,
            Some((meta.uid(), meta.gid())),
        )?;
        // The helper's own copy, for the admin (the store removes result.json once it read it).
        write_atomic(&self.paths.last_result(), &bytes, 0o600, None)?;
        match fs::remove_file(self.paths.journal()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("removing the journal")(e)),
        }
        Ok(())
    }

    fn journal(&self, j: &Journal) -> Result<(), HelperError> {
        tracing::info!(phase = ?j.phase, version = %j.version, "journal");
        save_json(&self.paths.journal(), j)
    }

    fn state(&self) -> Result<HelperState, HelperError> {
        Ok(load_json(&self.paths.state())?.unwrap_or_default())
    }

    fn recover(&mut self, mut j: Journal) -> Result<HelperResult, HelperError> {
        // Whatever dpkg left half done is finished first, so dpkg accepts the next command.
        let configure = dpkg(&["--configure", "-a"]).err();
        match recovery(&j) {
            Recovery::StartAgain { reason } => {
                let started = self.start_storebox().err();
                let reason = match started {
                    None => reason,
                    Some(e) => format!("{reason}; but storebox did not start: {e}"),
                };
                self.done(&mut j, Outcome::Failed, reason)
            }
            Recovery::RollBack { reason } => {
                let reason = match configure {
                    None => reason,
                    Some(e) => format!("{reason} (dpkg --configure -a: {e})"),
                };
                self.roll_back(&mut j, reason)
            }
            Recovery::Report { outcome, reason } => {
                Ok(self.result(j.action, &j.version, outcome, reason, &j.previous_version))
            }
        }
    }

    fn done(
        &self,
        j: &mut Journal,
        outcome: Outcome,
        reason: String,
    ) -> Result<HelperResult, HelperError> {
        j.phase = Phase::Done;
        j.outcome = Some(outcome);
        j.reason = reason.clone();
        self.journal(j)?;
        Ok(self.result(j.action, &j.version, outcome, reason, &j.previous_version))
    }

    /// Verifies the copied package and manifest; returns the manifest.
    fn verify(
        &self,
        package: &Path,
        manifest: &Path,
        version: &str,
        serial: u64,
        last_serial: Option<u64>,
    ) -> Result<Manifest, HelperError> {
        let key = self.config.updates.public_key.trim();
        if key.is_empty() {
            return Err(HelperError::Refused(
                "no [updates] public_key in the config: nothing can be verified".into(),
            ));
        }
        let key = parse_public_key(key)
            .map_err(|e| HelperError::Refused(format!("[updates] public_key: {e}")))?;
        let text = fs::read(manifest).map_err(io("reading the copied manifest"))?;
        let m: Manifest = serde_json::from_slice(&text)
            .map_err(|e| HelperError::Refused(format!("check `manifest` failed: {e}")))?;
        let facts = crate::release::package_facts(package)
            .map_err(|e| HelperError::Refused(format!("{e:#}")))?;
        m.verify(&key, &facts, self.clock.now(), last_serial)
            .map_err(|e| HelperError::Refused(e.to_string()))?;
        let control = crate::release::deb::read_control(
            File::open(package).map_err(io("opening the copied package"))?,
        )
        .map_err(|e| HelperError::Refused(format!("the package's control file: {e}")))?;
        if control.package != m.name || control.version != m.version || m.name != PACKAGE {
            return Err(HelperError::Refused(format!(
                "the package is {} {}, the manifest says {} {} (expected package {PACKAGE})",
                control.package, control.version, m.name, m.version
            )));
        }
        if m.version != version || m.serial != serial {
            return Err(HelperError::Refused(format!(
                "the request asks for {version} serial {serial}, the manifest is {} serial {}",
                m.version, m.serial
            )));
        }
        Ok(m)
    }

    /// The running version's package: kept by the helper, or in apt's archives. Copied into the
    /// helper's directory; its control file must name that version.
    fn previous_package(&self, running: &str) -> Result<PathBuf, HelperError> {
        let kept = kept_package(&self.paths.state_dir, running);
        let mut candidates = vec![kept.clone()];
        let prefix = apt_file_prefix(running);
        if let Ok(rd) = fs::read_dir(&self.paths.apt_archives) {
            let mut names: Vec<PathBuf> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
                })
                .collect();
            names.sort();
            candidates.extend(names);
        }
        for c in candidates {
            let Ok(f) = File::open(&c) else { continue };
            match crate::release::deb::read_control(f) {
                Ok(ctl) if ctl.package == PACKAGE && ctl.version == running => {
                    if c != kept {
                        copy_in(&c, &kept, MAX_PACKAGE_BYTES)?;
                    }
                    return Ok(kept);
                }
                _ => continue,
            }
        }
        Err(HelperError::Refused(format!(
            "the package of the running version {running} is neither in {} nor in {}: without it there is no way back, so nothing is installed",
            self.paths.state_dir.join("packages").display(),
            self.paths.apt_archives.display()
        )))
    }

    fn install(&mut self, req: &Request) -> Result<HelperResult, HelperError> {
        let Request::Install {
            version,
            serial,
            package,
            manifest,
            probation_seconds,
            ..
        } = req
        else {
            return Err(HelperError::Request("not an install".into()));
        };
        let mut state = self.state()?;
        let running = installed_version()?;
        let incoming = self.paths.state_dir.join("incoming");
        let pkg = incoming.join("package.deb");
        let man = incoming.join("manifest.json");
        copy_in(manifest, &man, MAX_MANIFEST_BYTES)?;
        copy_in(package, &pkg, MAX_PACKAGE_BYTES)?;
        self.verify(&pkg, &man, version, *serial, state.last_serial)?;
        if &running == version {
            return Err(HelperError::Refused(format!(
                "{version} is already installed"
            )));
        }
        let previous_package = self.previous_package(&running)?;
        let target = kept_package(&self.paths.state_dir, version);
        fs::rename(&pkg, &target).map_err(io("keeping the package"))?;
        let now = self.clock.now();
        let backup = self.paths.state_dir.join("backups").join(format!(
            "{}-before-{}",
            now.strftime("%Y%m%dT%H%M%SZ"),
            version.replace(':', "%3a")
        ));
        let mut j = Journal {
            action: Action::Install,
            version: version.clone(),
            previous_version: running.clone(),
            previous_package,
            backup: backup.clone(),
            phase: Phase::Prepared,
            started_at: now,
            outcome: None,
            reason: String::new(),
        };
        self.journal(&j)?;
        // The serial counts as tried from here on: a version that rolled back is not taken again
        // until a newer serial comes.
        state.last_serial = Some(*serial);
        save_json(&self.paths.state(), &state)?;

        if let Err(e) = run("systemctl", &["stop", UNIT], SYSTEMCTL_TIMEOUT)
            .and_then(|_| self.backup_db(&backup))
        {
            let started = self.start_storebox().err();
            let reason = match started {
                None => format!("before installing: {e}"),
                Some(s) => format!("before installing: {e}; and storebox did not start: {s}"),
            };
            return self.done(&mut j, Outcome::Failed, reason);
        }
        j.phase = Phase::BackedUp;
        self.journal(&j)?;

        j.phase = Phase::Installing;
        self.journal(&j)?;
        let target_s = target.to_string_lossy().into_owned();
        let installed = dpkg(&["--unpack", &target_s]).and_then(|_| {
            test_hook_stall_after_unpack();
            dpkg(&["--configure", PACKAGE])
        });
        if let Err(e) = installed {
            return self.roll_back(&mut j, format!("installing {version}: {e}"));
        }
        j.phase = Phase::Probation;
        self.journal(&j)?;
        if let Err(e) = self.probation(version, Duration::from_secs(*probation_seconds)) {
            return self.roll_back(&mut j, format!("{version} failed probation: {e}"));
        }
        state.last_install = Some(InstallRecord {
            version: version.clone(),
            previous_version: running.clone(),
            previous_package: j.previous_package.clone(),
            backup: backup.clone(),
            installed_at: self.clock.now(),
        });
        save_json(&self.paths.state(), &state)?;
        self.prune(&state);
        let reason = format!(
            "{version} installed and stayed up for {probation_seconds} s; previous {running} kept"
        );
        self.done(&mut j, Outcome::Installed, reason)
    }

    /// Starts storebox on the new version and watches it: it must become active (READY=1 within
    /// the unit's start timeout), then stay active with `NRestarts` unchanged for the probation
    /// time, and the installed binary must report the version.
    fn probation(&self, version: &str, probation: Duration) -> Result<(), HelperError> {
        let _ = run("systemctl", &["reset-failed", UNIT], QUERY_TIMEOUT);
        run("systemctl", &["start", UNIT], SYSTEMCTL_TIMEOUT)
            .map_err(|e| HelperError::Probation(format!("storebox did not start: {e}")))?;
        let restarts0 = unit_prop("NRestarts")?;
        let end = Instant::now() + probation;
        loop {
            let active = unit_prop("ActiveState")?;
            let restarts = unit_prop("NRestarts")?;
            if active != "active" {
                return Err(HelperError::Probation(format!(
                    "storebox.service is {active} during probation"
                )));
            }
            if restarts != restarts0 {
                return Err(HelperError::Probation(format!(
                    "storebox.service restarted during probation (NRestarts {restarts0} -> {restarts})"
                )));
            }
            if Instant::now() >= end {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        let reported = run("/usr/bin/storebox", &["version"], QUERY_TIMEOUT)?;
        let reported = reported.trim().trim_start_matches("storebox ").to_string();
        // cargo-deb names a package `0.1.0-1` for a binary that reports `0.1.0`.
        if !super::runs_version(&reported, version) {
            return Err(HelperError::Probation(format!(
                "the installed binary reports version {reported}, expected {version} (or its upstream part)"
            )));
        }
        Ok(())
    }

    fn start_storebox(&self) -> Result<(), HelperError> {
        let _ = run("systemctl", &["reset-failed", UNIT], QUERY_TIMEOUT);
        run("systemctl", &["start", UNIT], SYSTEMCTL_TIMEOUT).map(|_| ())
    }

    /// Copies the database and its WAL (storebox stopped, so the pair is consistent).
    fn backup_db(&self, backup: &Path) -> Result<(), HelperError> {
        fs::create_dir_all(backup).map_err(io(format!("creating {}", backup.display())))?;
        for suffix in ["", "-wal"] {
            let from = PathBuf::from(format!("{}{suffix}", self.paths.db.display()));
            let to = backup.join(format!("storebox.db{suffix}"));
            match fs::symlink_metadata(&from) {
                Ok(_) => copy_in(&from, &to, u64::MAX / 2)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !suffix.is_empty() => {}
                Err(e) => return Err(io(format!("reading {}", from.display()))(e)),
            }
        }
        if let Ok(d) = File::open(backup) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Puts the backup back in place of the database (owned by the data directory's owner).
    fn restore_db(&self, backup: &Path) -> Result<(), HelperError> {
        let meta = fs::metadata(&self.paths.data_dir)
            .map_err(io(format!("reading {}", self.paths.data_dir.display())))?;
        restore_database(&self.paths.db, backup, (meta.uid(), meta.gid()))
    }

    /// Restores the kept package and the backup, starts storebox: outcome `rolled_back`, or
    /// `failed` with every error when the restore itself did not work.
    fn roll_back(&mut self, j: &mut Journal, why: String) -> Result<HelperResult, HelperError> {
        tracing::warn!(%why, "rolling back");
        j.phase = Phase::RollingBack;
        j.reason = why.clone();
        self.journal(j)?;
        let mut errors = Vec::new();
        if let Err(e) = run("systemctl", &["stop", UNIT], SYSTEMCTL_TIMEOUT) {
            errors.push(e.to_string());
        }
        let prev = j.previous_package.to_string_lossy().into_owned();
        if let Err(e) = dpkg(&["--configure", "-a"]) {
            errors.push(e.to_string());
        }
        let installed = dpkg(&["-i", &prev]);
        if let Err(e) = &installed {
            errors.push(e.to_string());
        }
        // dpkg's postinst may have started the old version already: stop it for the restore.
        let _ = run("systemctl", &["stop", UNIT], SYSTEMCTL_TIMEOUT);
        if let Err(e) = self.restore_db(&j.backup) {
            errors.push(e.to_string());
        }
        if let Err(e) = self.start_storebox() {
            errors.push(e.to_string());
        }
        let now = installed_version().unwrap_or_default();
        if now != j.previous_version {
            errors.push(format!(
                "installed version is {now:?}, not {}",
                j.previous_version
            ));
        }
        if errors.is_empty() {
            let reason = format!("{why}; rolled back to {}", j.previous_version);
            self.done(j, Outcome::RolledBack, reason)
        } else {
            let reason = format!("{why}; the rollback failed: {}", errors.join("; "));
            self.done(j, Outcome::Failed, reason)
        }
    }

    /// A rollback the store asked for (its own probation failed): back to the version before
    /// the helper's last install, with the data as it was then.
    fn rollback_request(&mut self, version: &str, why: &str) -> Result<HelperResult, HelperError> {
        let state = self.state()?;
        let running = installed_version()?;
        let Some(last) = state.last_install else {
            return Err(HelperError::Refused(
                "the helper has installed nothing it could roll back".into(),
            ));
        };
        if last.version != version || running != version {
            return Err(HelperError::Refused(format!(
                "asked to roll back {version}, but the running version is {running} and the helper's last install was {}",
                last.version
            )));
        }
        let mut j = Journal {
            action: Action::Rollback,
            version: version.to_string(),
            previous_version: last.previous_version.clone(),
            previous_package: last.previous_package.clone(),
            backup: last.backup.clone(),
            phase: Phase::RollingBack,
            started_at: self.clock.now(),
            outcome: None,
            reason: String::new(),
        };
        let res = self.roll_back(&mut j, format!("the store asked for a rollback: {why}"))?;
        if res.outcome == Outcome::RolledBack {
            let mut state = self.state()?;
            state.last_install = None;
            save_json(&self.paths.state(), &state)?;
        }
        Ok(res)
    }

    /// Keeps the packages and backups the last install needs plus the [`KEEP`] newest others.
    fn prune(&self, state: &HelperState) {
        let mut keep: Vec<PathBuf> = Vec::new();
        if let Some(l) = &state.last_install {
            keep.push(l.previous_package.clone());
            keep.push(kept_package(&self.paths.state_dir, &l.version));
            keep.push(l.backup.clone());
        }
        for sub in ["packages", "backups"] {
            let Ok(rd) = fs::read_dir(self.paths.state_dir.join(sub)) else {
                continue;
            };
            let mut entries: Vec<(std::time::SystemTime, PathBuf)> = rd
                .filter_map(|e| e.ok())
                .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
                .filter(|(_, p)| !keep.contains(p))
                .collect();
            entries.sort_by_key(|e| std::cmp::Reverse(e.0));
            for (_, p) in entries.into_iter().skip(KEEP) {
                let _ = if p.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> &'static Path {
        Path::new("/var/lib/storebox/updates")
    }

    fn install_json(extra: &str) -> String {
        format!(
            r#"{{"action":"install","version":"0.2.0","serial":7,"rollout":"r1",
            "package":"/var/lib/storebox/updates/staged/storebox_0.2.0_amd64.deb",
            "manifest":"/var/lib/storebox/updates/staged/storebox_0.2.0_amd64.deb.manifest.json",
            "probation_seconds":60,"requested_at":"2026-11-30T02:00:00Z"{extra}}}"#
        )
    }

    /// A store database at `path` whose outbox handed out `n` events (ids `prefix-1…`).
    fn store_db_with_events(path: &Path, prefix: &str, n: usize) {
        let db = crate::db::Db::open(path).unwrap();
        db.write_blocking(|c| {
            for i in 1..=n {
                crate::outbox::enqueue(
                    c,
                    &format!("{prefix}-{i}"),
                    crate::proto::StoreEventType::ReleaseStatus,
                    crate::outbox::Class::Business,
                    "{}",
                    1,
                )?;
            }
            Ok(())
        })
        .unwrap();
    }

    /// The seq of the next event the database at `path` queues, and the ids it held before.
    fn next_event(path: &Path) -> (i64, Vec<String>) {
        let db = crate::db::Db::open(path).unwrap();
        db.write_blocking(|c| {
            let ids: Vec<String> = c
                .prepare("SELECT id FROM outbox ORDER BY seq")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            crate::outbox::enqueue(
                c,
                "after-restore",
                crate::proto::StoreEventType::ReleaseStatus,
                crate::outbox::Class::Business,
                "{}",
                2,
            )?;
            let seq = c.query_row(
                "SELECT seq FROM outbox WHERE id = 'after-restore'",
                [],
                |r| r.get(0),
            )?;
            Ok((seq, ids))
        })
        .unwrap()
    }

    /// The version being rolled back pushed events numbered after the backup; the restored
    /// database must not number its next events with those seqs (HQ keeps one event per
    /// `(store, seq)` and would drop them as duplicates), also when the restore is done again
    /// after an interruption that left no database behind.
    #[test]
    fn a_restored_database_numbers_its_next_events_after_those_of_the_replaced_one() {
        let tmp = tempfile::tempdir().unwrap();
        let backup = tmp.path().join("backups/t-before-0.3.0");
        let db = tmp.path().join("data/storebox.db");
        store_db_with_events(&backup.join("storebox.db"), "old", 2);
        store_db_with_events(&db, "new", 5);
        // HQ acknowledged new-4; new-3 and new-5 (queued after the backup) it has not.
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute("UPDATE outbox SET sent_ms = 9 WHERE id = 'new-4'", [])
            .unwrap();
        let me = {
            let m = fs::metadata(tmp.path()).unwrap();
            (m.uid(), m.gid())
        };
        restore_database(&db, &backup, me).unwrap();
        assert_eq!(fs::read_to_string(backup.join(OUTBOX_MARK)).unwrap(), "5\n");
        for suffix in ["-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{suffix}", db.display()));
            assert!(
                !p.exists() || fs::metadata(&p).unwrap().uid() == me.0,
                "{}",
                p.display()
            );
        }
        let (seq, ids) = next_event(&db);
        assert_eq!(
            ids,
            ["old-1", "old-2", "new-3", "new-5"],
            "the backup's events are back, and the replaced one's unsent events after them"
        );
        assert_eq!(seq, 6, "continues after the replaced database's 5");

        // Done again (a rollback interrupted after the database was removed): the mark holds.
        fs::remove_file(&db).unwrap();
        for suffix in ["-wal", "-shm"] {
            let _ = fs::remove_file(format!("{}{suffix}", db.display()));
        }
        restore_database(&db, &backup, me).unwrap();
        let (seq, ids) = next_event(&db);
        assert_eq!(seq, 6, "the mark holds");
        assert_eq!(
            ids,
            ["old-1", "old-2", "new-3", "new-5"],
            "the carried entries were kept next to the backup"
        );

        // A backup with no mark and nothing to replace restores as it was.
        let plain = tmp.path().join("backups/t-before-0.4.0");
        store_db_with_events(&plain.join("storebox.db"), "p", 3);
        let other = tmp.path().join("data2/storebox.db");
        fs::create_dir_all(other.parent().unwrap()).unwrap();
        restore_database(&other, &plain, me).unwrap();
        assert!(!plain.join(OUTBOX_MARK).exists());
        assert_eq!(next_event(&other).0, 4);
    }

    #[test]
    fn parses_an_install_and_a_rollback_request() {
        let r = parse_request(install_json("").as_bytes(), dir()).unwrap();
        assert_eq!(r.action(), Action::Install);
        assert_eq!(r.version(), "0.2.0");
        let r = parse_request(
            br#"{"action":"rollback","version":"1:0.2.0-1","reason":"probation: not ready","requested_at":"2026-11-30T02:00:00Z"}"#,
            dir(),
        )
        .unwrap();
        assert_eq!(
            r,
            Request::Rollback {
                version: "1:0.2.0-1".into(),
                reason: "probation: not ready".into(),
                requested_at: "2026-11-30T02:00:00Z".parse().unwrap()
            }
        );
    }

    fn refused(json: &str) -> String {
        match parse_request(json.as_bytes(), dir()) {
            Err(HelperError::Request(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn refuses_requests_that_are_malformed_or_out_of_bounds() {
        assert!(refused(&install_json(r#","extra":1"#)).contains("unknown field"));
        assert!(refused(r#"{"action":"format-disk"}"#).contains("unknown variant"));
        let j = install_json("").replace("\"0.2.0\"", "\"0.2.0; rm -rf /\"");
        assert!(
            refused(&j).contains("not a Debian version"),
            "{}",
            refused(&j)
        );
        let j = install_json("").replace(
            "/var/lib/storebox/updates/staged/storebox_0.2.0_amd64.deb\"",
            "/etc/shadow\"",
        );
        assert!(refused(&j).contains("`package` /etc/shadow must be an absolute path inside"));
        let j = install_json("").replace("/updates/staged/", "/updates/../../../etc/");
        assert!(refused(&j).contains("must be an absolute path inside"));
        let j = install_json("").replace("\"probation_seconds\":60", "\"probation_seconds\":0");
        assert!(refused(&j).contains("`probation_seconds` 0 is outside 5..=3600"));
        let j = install_json("").replace("\"probation_seconds\":60", "\"probation_seconds\":7200");
        assert!(refused(&j).contains("outside"));
        let big = format!(
            "{}{}",
            install_json(""),
            " ".repeat(MAX_REQUEST_BYTES as usize)
        );
        assert!(refused(&big).contains("at most 16384"));
        let long = format!(
            r#"{{"action":"rollback","version":"0.2.0","reason":"{}","requested_at":"2026-11-30T02:00:00Z"}}"#,
            "x".repeat(MAX_REASON + 1)
        );
        assert!(refused(&long).contains("`reason` is longer"));
    }

    #[test]
    fn an_unparsable_request_still_gets_a_result_naming_its_action() {
        assert_eq!(
            action_of_unparsed(br#"{"action":"rollback","version":"0.3.0","x":1}"#),
            (Action::Rollback, "0.3.0".to_string())
        );
        assert_eq!(
            action_of_unparsed(b"not json"),
            (Action::Install, String::new())
        );
    }

    fn journal(phase: Phase) -> Journal {
        Journal {
            action: Action::Install,
            version: "0.3.0".into(),
            previous_version: "0.2.0".into(),
            previous_package: "/var/lib/storebox-updater/packages/storebox_0.2.0_amd64.deb".into(),
            backup: "/var/lib/storebox-updater/backups/x".into(),
            phase,
            started_at: "2026-11-30T02:00:00Z".parse().unwrap(),
            outcome: None,
            reason: String::new(),
        }
    }

    #[test]
    fn recovery_starts_again_before_dpkg_and_rolls_back_after() {
        for p in [Phase::Prepared, Phase::BackedUp] {
            match recovery(&journal(p)) {
                Recovery::StartAgain { reason } => {
                    assert!(reason.contains("nothing was installed, 0.2.0 started again"))
                }
                other => panic!("{p:?}: {other:?}"),
            }
        }
        for p in [Phase::Installing, Phase::Probation, Phase::RollingBack] {
            match recovery(&journal(p)) {
                Recovery::RollBack { reason } => {
                    assert!(reason.contains("interrupted"), "{reason}");
                    assert!(reason.contains("0.3.0"), "{reason}");
                }
                other => panic!("{p:?}: {other:?}"),
            }
        }
        let mut j = journal(Phase::RollingBack);
        j.reason = "0.3.0 failed probation: restarted".into();
        assert_eq!(
            recovery(&j),
            Recovery::RollBack {
                reason:
                    "0.3.0 failed probation: restarted; the rollback was interrupted and done again"
                        .into()
            }
        );
        let mut j = journal(Phase::Done);
        j.outcome = Some(Outcome::Installed);
        j.reason = "ok".into();
        assert_eq!(
            recovery(&j),
            Recovery::Report {
                outcome: Outcome::Installed,
                reason: "ok".into()
            }
        );
    }

    #[test]
    fn results_and_journals_have_the_documented_json_shape() {
        let r = HelperResult {
            action: Action::Install,
            version: "0.3.0".into(),
            outcome: Outcome::RolledBack,
            reason: "r".into(),
            previous_version: "0.2.0".into(),
            finished_at: "2026-11-30T02:00:00Z".parse().unwrap(),
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"action":"install","version":"0.3.0","outcome":"rolled_back",
                "reason":"r","previous_version":"0.2.0","finished_at":"2026-11-30T02:00:00Z"})
        );
        let j = journal(Phase::Installing);
        let back: Journal = serde_json::from_str(&serde_json::to_string(&j).unwrap()).unwrap();
        assert_eq!(back, j);
    }

    #[test]
    fn external_commands_are_bounded_and_their_stderr_is_the_reason() {
        let t = Instant::now();
        match run("sleep", &["30"], Duration::from_millis(300)) {
            Err(HelperError::Command { command, reason }) => {
                assert_eq!(command, "sleep 30");
                assert!(reason.starts_with("timed out after 0 s"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(5));
        match run(
            "sh",
            &[
                "-c",
                "echo progress; echo 'dpkg: error: broken' >&2; exit 3",
            ],
            Duration::from_secs(10),
        ) {
            Err(HelperError::Command { reason, .. }) => {
                assert!(reason.contains("exit status: 3"), "{reason}");
                assert!(reason.contains("dpkg: error: broken"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            run("sh", &["-c", "echo ok"], Duration::from_secs(10)).unwrap(),
            "ok\n"
        );
        assert!(matches!(
            run("/nonexistent/dpkg", &[], Duration::from_secs(1)),
            Err(HelperError::Command { reason, .. }) if reason.starts_with("cannot start it")
        ));
    }

    #[test]
    fn package_names_follow_apt() {
        assert_eq!(apt_file_prefix("1:0.2.0-1"), "storebox_1%3a0.2.0-1_");
        assert_eq!(
            kept_package(Path::new("/s"), "0.2.0"),
            Path::new("/s/packages/storebox_0.2.0_amd64.deb")
        );
        assert!(super::super::runs_version("0.2.0+upd1", "0.2.0+upd1"));
        assert!(super::super::runs_version("0.1.0", "0.1.0-1"));
        assert!(super::super::runs_version("0.1.0", "2:0.1.0-1"));
        assert!(!super::super::runs_version("0.1.0", "0.1.1-1"));
        assert!(!super::super::runs_version("0.1.0-1", "0.1.0+upd1"));
        assert!(valid_version("0.2.0~rc1+b2"));
        assert!(!valid_version("v0.2"));
        assert!(!valid_version(""));
        assert!(!valid_version("0.2 0"));
    }

    #[test]
    fn writes_atomically_without_following_a_planted_symlink() {
        let d = std::env::temp_dir().join(format!("sbhelper-{}", uuid::Uuid::new_v4().simple()));
        fs::create_dir_all(&d).unwrap();
        let target = d.join("victim");
        fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, d.join("result.json")).unwrap();
        write_atomic(&d.join("result.json"), b"{}\n", 0o640, None).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(fs::read_to_string(d.join("result.json")).unwrap(), "{}\n");
        assert!(read_bounded(&d.join("result.json"), 2).is_err());
        std::os::unix::fs::symlink(&target, d.join("link")).unwrap();
        assert!(read_bounded(&d.join("link"), 100).is_err());
        fs::remove_dir_all(&d).unwrap();
    }
}
