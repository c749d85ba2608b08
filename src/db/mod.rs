//! The store's single SQLite database: opening it with the right pragmas, migrating it forward with
//! the migrations embedded in the binary, and running blocking queries off the async executor.
//!
//! Concurrency model (chosen deliberately): one writer connection behind a mutex — SQLite allows
//! one writer at a time anyway, and a single writer lets the device ingest batch many messages into
//! one transaction (group commit) — plus a small pool of reader connections, which WAL lets run
//! alongside the writer. Every call goes through `spawn_blocking`; a panic inside a query is
//! re-raised in the caller instead of being swallowed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags};

pub mod migrations;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database migration {name} failed: {source}")]
    Migration {
        name: &'static str,
        source: rusqlite::Error,
    },
    #[error(
        "database was written by a newer storebox (schema {found}, this build knows up to {known})"
    )]
    TooNew { found: i64, known: i64 },
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

pub type DbResult<T> = Result<T, DbError>;

/// Reader connections kept open, and the most async reads that run at once. Opening a connection
/// costs far more than a lookup (file open, schema parse), so a burst of requests waits for a
/// pooled reader instead of opening more (measured: 32 concurrent price lookups ran at a sixth of
/// the rate of 4 when each surplus request opened its own connection).
const READERS: usize = 4;

struct Inner {
    path: PathBuf,
    /// The `-shm` file, for [`Db::commit_stamp`]; None when it could not be opened.
    ///
    /// Never closed (`ManuallyDrop`): POSIX record locks belong to the process, and closing *any*
    /// descriptor of a file drops every lock the process holds on it, including SQLite's own on
    /// the WAL index. One descriptor per opened database is left open until the process exits.
    shm: Option<std::mem::ManuallyDrop<std::fs::File>>,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    read_permits: tokio::sync::Semaphore,
}

/// Size of one copy of the WAL-index header, and the format version it carries (`iVersion`).
const WAL_INDEX_HEADER: usize = 48;
const WAL_INDEX_VERSION: u32 = 3_007_000;

/// See [`Db::commit_stamp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitStamp([u8; WAL_INDEX_HEADER]);

/// Cheap to clone handle to the database.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

/// Readers map up to this much of the database file instead of copying each page they read
/// with `pread` (a tenth of the CPU of a price lookup). Mapped pages are the kernel's page cache
/// of the file, shared and reclaimable (`RssFile`, not `RssAnon`); docs/operations.md#memory.
pub const READER_MMAP_BYTES: i64 = 256 << 20;

fn configure(conn: &Connection, writer: bool) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    if writer {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a committed outbox entry, feed cursor or acked device event survives power loss.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "wal_autocheckpoint", 2000)?;
    } else {
        conn.pragma_update(None, "mmap_size", READER_MMAP_BYTES)?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

impl Db {
    /// Opens (creating if needed) the database file and migrates it to the newest schema.
    pub fn open(path: &Path) -> DbResult<Db> {
        Self::open_with(path, migrations::MIGRATIONS)
    }

    /// Opens a database file migrated with another list of migrations (the reference HQ's).
    pub fn open_with(path: &Path, list: &'static [(&'static str, &'static str)]) -> DbResult<Db> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|source| DbError::DataDir {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
        }
        let open_err = |source| DbError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut writer = Connection::open(path).map_err(open_err)?;
        configure(&writer, true).map_err(open_err)?;
        migrations::migrate_list(&mut writer, list, list.len())?;
        // Opened after the writer, which holds the database's shared lock for as long as this
        // handle lives: no other process can then delete and recreate the `-shm` file (SQLite
        // does so only when it closes the last connection of all), so this stays the live one.
        let mut shm_path = path.as_os_str().to_owned();
        shm_path.push("-shm");
        let shm = std::fs::File::open(&shm_path)
            .ok()
            .map(std::mem::ManuallyDrop::new);
        Ok(Db {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                shm,
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
                read_permits: tokio::sync::Semaphore::new(READERS),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// A stamp that changes with every commit to the database by any process, read without a
    /// query: the WAL-index header at the start of the `-shm` file (documented in SQLite's "WAL-mode
    /// file format"; its change counter `iChange` is incremented by every write transaction and
    /// every WAL reset). A reader that starts after a commit sees a new stamp, so two equal
    /// stamps mean nothing was committed between them, and a statement run *after* reading a
    /// stamp sees at least what it stands for. One `pread`, a tenth of the cheapest statement.
    ///
    /// None when there is no header to trust: no `-shm` file, a header being written at that very
    /// moment (its two copies differ), or a format this build does not know. Callers then read
    /// the database.
    pub fn commit_stamp(&self) -> Option<CommitStamp> {
        use std::os::unix::fs::FileExt;
        let shm = self.inner.shm.as_ref()?;
        let mut buf = [0u8; 2 * WAL_INDEX_HEADER];
        // SQLite writes the second copy, then the first, and readers accept the header only when
        // both agree; the same check here rejects a torn read.
        if shm.read_at(&mut buf, 0).ok()? != buf.len() {
            return None;
        }
        let (first, second) = buf.split_at(WAL_INDEX_HEADER);
        let version = u32::from_ne_bytes(first[..4].try_into().expect("4 bytes"));
        let is_init = first[12];
        (first == second && version == WAL_INDEX_VERSION && is_init == 1)
            .then(|| CommitStamp(first.try_into().expect("header size")))
    }

    fn reader(&self) -> DbResult<Connection> {
        if let Some(c) = self.inner.readers.lock().pop() {
            return Ok(c);
        }
        let conn = Connection::open_with_flags(
            &self.inner.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| DbError::Open {
            path: self.inner.path.clone(),
            source,
        })?;
        configure(&conn, false)?;
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut readers = self.inner.readers.lock();
        if readers.len() < READERS {
            readers.push(conn);
        }
    }

    /// Runs `f` with the writer connection on the calling thread (for CLI commands and for code
    /// already on a blocking thread).
    pub fn write_blocking<T>(&self, f: impl FnOnce(&mut Connection) -> DbResult<T>) -> DbResult<T> {
        let mut conn = self.inner.writer.lock();
        f(&mut conn)
    }

    /// Runs `f` with a reader connection on the calling thread, inside one read transaction: all
    /// its queries see the same snapshot (a price answer never mixes two HQ batches), and the
    /// file's shared lock is taken once, not once per statement.
    pub fn read_blocking<T>(&self, f: impl FnOnce(&Connection) -> DbResult<T>) -> DbResult<T> {
        let conn = self.reader()?;
        conn.prepare_cached("BEGIN")?.execute([])?;
        let out = f(&conn);
        if conn.is_autocommit() || conn.prepare_cached("COMMIT")?.execute([]).is_ok() {
            self.give_back(conn);
        }
        out
    }

    /// Runs `f` with a pooled reader on the calling async worker, for reads that take tens of
    /// microseconds (a few indexed lookups), where a trip to the blocking pool costs more than
    /// the work. When all pooled readers are busy it waits for one like [`Db::read`] (never opens
    /// a connection on the worker). Anything that scans, sorts or may take longer goes through
    /// [`Db::read`].
    pub async fn read_inline<T, F>(&self, f: F) -> DbResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> DbResult<T> + Send + 'static,
    {
        match self.inner.read_permits.try_acquire() {
            Ok(_permit) => self.read_blocking(f),
            Err(_) => self.read(f).await,
        }
    }

    /// Runs `f` with a pooled reader on the calling async worker *without* a read transaction:
    /// for a single statement, which is its own transaction and sees everything committed
    /// before it (e.g. the version check that decides whether a kept price answer may be served;
    /// `BEGIN` and `COMMIT` around it cost twice the statement). Several statements that must
    /// agree take [`Db::read_inline`]. Waits like it when every pooled reader is busy.
    pub async fn read_one_inline<T, F>(&self, f: F) -> DbResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> DbResult<T> + Send + 'static,
    {
        let run = |db: &Db, f: F| {
            let conn = db.reader()?;
            let out = f(&conn);
            db.give_back(conn);
            out
        };
        match self.inner.read_permits.try_acquire() {
            Ok(_permit) => run(self, f),
            Err(_) => {
                let _permit = self.inner.read_permits.acquire().await.ok();
                let db = self.clone();
                run_blocking(move || run(&db, f)).await
            }
        }
    }

    /// Runs `f` with the writer connection on a blocking thread.
    pub async fn write<T, F>(&self, f: F) -> DbResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> DbResult<T> + Send + 'static,
    {
        let db = self.clone();
        run_blocking(move || db.write_blocking(f)).await
    }

    /// Runs `f` with a reader connection on a blocking thread.
    pub async fn read<T, F>(&self, f: F) -> DbResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> DbResult<T> + Send + 'static,
    {
        // Never closed, so this always yields a permit.
        let _permit = self.inner.read_permits.acquire().await.ok();
        let db = self.clone();
        run_blocking(move || db.read_blocking(f)).await
    }

    /// Consistent online copy of the whole database (`VACUUM INTO`), safe while the server runs.
    pub fn backup_to(&self, dest: &Path) -> DbResult<()> {
        if dest.exists() {
            return Err(DbError::Open {
                path: dest.to_path_buf(),
                source: rusqlite::Error::InvalidPath(dest.to_path_buf()),
            });
        }
        let conn = self.reader()?;
        conn.execute("VACUUM INTO ?1", [dest.to_string_lossy()])?;
        Ok(())
    }

    /// Size of the database file plus its WAL, in bytes.
    pub fn size_bytes(&self) -> u64 {
        let mut total = 0;
        for suffix in ["", "-wal"] {
            let mut p = self.inner.path.clone().into_os_string();
            p.push(suffix);
            if let Ok(m) = std::fs::metadata(&p) {
                total += m.len();
            }
        }
        total
    }
}

/// Runs blocking work on tokio's blocking pool; a panic in `f` is re-raised here.
pub async fn run_blocking<T, F>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("blocking task cancelled: {e}"),
    }
}

/// Starts a write transaction that takes the write lock at once (`BEGIN IMMEDIATE`). A deferred
/// transaction that reads first and writes later cannot wait for another writer (SQLite answers
/// "database is locked" at once), so every writing transaction in storebox starts this way and
/// waits up to the busy timeout instead.
pub fn immediate(conn: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
}

/// Milliseconds since the Unix epoch, the storage format for instants.
pub fn ms(ts: jiff::Timestamp) -> i64 {
    ts.as_millisecond()
}

/// The instant stored as milliseconds, formatted RFC 3339 for APIs.
pub fn ts_from_ms(ms: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

pub fn optional<T>(r: rusqlite::Result<T>) -> DbResult<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Checks, before an offline admin command (`device`, `user`, `token`, `import`, `backup`) opens
/// the database, that it runs as the owner of the data directory. Another user either cannot
/// write it (SQLite would fail deep inside with a permission error) or, as root, would leave a
/// `-wal`/`-shm` file owned by root that the service then cannot open. `command` is the command
/// line to suggest, run as the owner. A directory that does not exist yet is fine (it is created
/// by whoever runs first, as in development).
pub fn check_data_dir_owner(dir: &Path, command: &str) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid();
    let my_name = || {
        nix::unistd::User::from_uid(me)
            .ok()
            .flatten()
            .map_or_else(|| format!("uid {me}"), |u| u.name)
    };
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            // Typically a parent directory this user may not enter (/var/lib/storebox is 0750).
            let owner = dir
                .parent()
                .and_then(|p| std::fs::metadata(p).ok())
                .map(|m| m.uid());
            let hint = owner
                .and_then(|uid| nix::unistd::User::from_uid(uid.into()).ok().flatten())
                .map(|u| u.name)
                .filter(|n| n != "root")
                .unwrap_or_else(|| "storebox".into());
            return Err(format!(
                "cannot access the data directory {} as {}: {e}. Run the command as the \
                 service user: sudo -u {hint} {command}",
                dir.display(),
                my_name()
            ));
        }
    };
    if meta.uid() == me.as_raw() {
        return Ok(());
    }
    let owner = nix::unistd::User::from_uid(meta.uid().into())
        .ok()
        .flatten()
        .map_or_else(|| meta.uid().to_string(), |u| u.name);
    let why = if nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_err() {
        "cannot write it"
    } else {
        "would leave files there that the service cannot open"
    };
    Err(format!(
        "the data directory {} belongs to {owner} and this command runs as {}, which {why}. \
         Run it as {owner}: sudo -u {owner} {command}",
        dir.display(),
        my_name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database written by schema 1 (an earlier release) opens with this build, is migrated
    /// forward in place, and keeps its data.
    #[test]
    fn opens_a_database_from_an_earlier_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            migrations::migrate(&mut conn, 1).unwrap();
            assert_eq!(migrations::current_version(&conn).unwrap(), 1);
            conn.execute(
                "INSERT INTO devices (id, kind, name, secret_hash, created_ms) VALUES ('lane-1', 'lane', 'Lane 1', 'abc', 1)",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO outbox (id, type, class, payload, created_ms) VALUES ('o1', 'checkout.completed', 'business', '{}', 1)",
                [],
            )
            .unwrap();
        }
        let db = Db::open(&path).unwrap();
        let (version, online, name, outbox): (i64, i64, String, i64) = db
            .read_blocking(|c| {
                Ok(c.query_row(
                    "SELECT (SELECT user_version FROM pragma_user_version), online, name, (SELECT count(*) FROM outbox)
                     FROM devices WHERE id = 'lane-1'",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )?)
            })
            .unwrap();
        assert_eq!(version, migrations::MIGRATIONS.len() as i64);
        assert_eq!((online, name.as_str(), outbox), (0, "Lane 1", 1));
    }

    /// The stamp stays while only reads happen and moves with every commit, by this handle or by
    /// another connection (as `storebox import` in another process), and after a checkpoint that
    /// resets the WAL.
    #[test]
    fn commit_stamp_moves_with_every_commit_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let db = Db::open(&path).unwrap();
        let first = db.commit_stamp().expect("a WAL database has a stamp");
        let count = |db: &Db| {
            db.read_blocking(|c| {
                Ok(c.query_row("SELECT count(*) FROM outbox", [], |r| r.get::<_, i64>(0))?)
            })
            .unwrap()
        };
        assert_eq!(count(&db), 0);
        assert_eq!(db.commit_stamp(), Some(first), "a read is not a commit");

        let mut seen = vec![first];
        let mut other = Connection::open(&path).unwrap();
        for i in 0..5 {
            let sql = format!(
                "INSERT INTO outbox (id, type, class, payload, created_ms) VALUES ('o{i}', 't', 'business', '{{}}', 1)"
            );
            if i % 2 == 0 {
                db.write_blocking(|c| Ok(c.execute(&sql, [])?)).unwrap();
            } else {
                let tx = other.transaction().unwrap();
                tx.execute(&sql, []).unwrap();
                tx.commit().unwrap();
            }
            let now = db.commit_stamp().expect("stamp");
            assert!(!seen.contains(&now), "commit {i} left the stamp as it was");
            seen.push(now);
        }
        assert_eq!(count(&db), 5);
        assert_eq!(db.commit_stamp().as_ref(), seen.last());
        // A checkpoint that truncates the WAL, then a commit into the reset WAL.
        other
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        other
            .execute("DELETE FROM outbox WHERE id = 'o0'", [])
            .unwrap();
        let after_reset = db.commit_stamp().expect("stamp");
        assert!(!seen.contains(&after_reset));
        assert_eq!(count(&db), 4);
    }

    #[test]
    fn refuses_a_database_from_a_newer_build() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = Db::open(&path).err().expect("must refuse").to_string();
        assert!(
            err.contains("newer storebox") && err.contains("99"),
            "{err}"
        );
    }
}
