//! The files storebox and the root helper (`storebox-updater.service`) exchange in
//! `<data_dir>/updates/` (docs/releases.md, "Store ↔ root helper"). storebox runs sandboxed as
//! user storebox and cannot install packages; it writes [`Request`] to `request.json`, the helper
//! carries it out and answers with [`Outcome`] in `result.json`. Both files are written
//! atomically (temp file, fsync, rename, fsync of the directory), so a reader sees a whole file or
//! none. Nothing in a request is trusted by the helper: it verifies package and manifest again
//! against the public key in its own root-owned configuration.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The request file's name in the updates directory.
pub const REQUEST_FILE: &str = "request.json";
/// The result file's name in the updates directory.
pub const RESULT_FILE: &str = "result.json";
/// Largest result file read (a result is a few hundred bytes).
pub const MAX_RESULT_BYTES: u64 = 64 * 1024;

/// What storebox asks the root helper to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Install {
        version: String,
        serial: u64,
        rollout: String,
        /// Absolute path of the staged `.deb`.
        package: PathBuf,
        /// Absolute path of the staged manifest (`.json`).
        manifest: PathBuf,
        /// The helper rolls back by itself when the new version is not active within this.
        probation_seconds: u64,
        requested_at: Timestamp,
    },
    Rollback {
        version: String,
        reason: String,
        requested_at: Timestamp,
    },
}

impl Request {
    pub fn action(&self) -> Action {
        match self {
            Request::Install { .. } => Action::Install,
            Request::Rollback { .. } => Action::Rollback,
        }
    }

    pub fn version(&self) -> &str {
        match self {
            Request::Install { version, .. } | Request::Rollback { version, .. } => version,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Install,
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// The package is installed and storebox was restarted on it.
    Installed,
    /// The install did not happen; the running version is unchanged.
    Failed,
    /// The previous package and data were restored and storebox restarted on them.
    RolledBack,
}

/// What the root helper did (`result.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub action: Action,
    /// The version the request was about.
    pub version: String,
    pub outcome: OutcomeKind,
    #[serde(default)]
    pub reason: String,
    /// The version that ran before (the one a rollback restores).
    #[serde(default)]
    pub previous_version: String,
    pub finished_at: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid file of the update protocol: {message}")]
    Invalid { path: PathBuf, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory, fsync, rename, fsync
/// of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io(path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

pub fn write_request(dir: &Path, r: &Request) -> Result<(), FileError> {
    let path = dir.join(REQUEST_FILE);
    let json = serde_json::to_vec_pretty(r).map_err(|e| FileError::Invalid {
        path: path.clone(),
        message: e.to_string(),
    })?;
    write_atomic(&path, &json)
}

/// The request waiting for the helper, if any.
pub fn read_request(dir: &Path) -> Result<Option<Request>, FileError> {
    read_json(&dir.join(REQUEST_FILE))
}

/// The helper's result, if one is there.
pub fn read_outcome(dir: &Path) -> Result<Option<Outcome>, FileError> {
    read_json(&dir.join(RESULT_FILE))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, FileError> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    let mut text = String::new();
    use std::io::Read as _;
    f.take(MAX_RESULT_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io(path))?;
    if text.len() as u64 > MAX_RESULT_BYTES {
        return Err(FileError::Invalid {
            path: path.to_path_buf(),
            message: format!("larger than {MAX_RESULT_BYTES} bytes"),
        });
    }
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| FileError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// Removes a protocol file; a missing file is fine.
pub fn remove(dir: &Path, name: &str) -> Result<(), FileError> {
    let path = dir.join(name);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(&path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_have_the_documented_shape_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let at: Timestamp = "2026-12-01T02:30:00Z".parse().unwrap();
        let r = Request::Install {
            version: "1.2.0".into(),
            serial: 7,
            rollout: "r-1".into(),
            package: "/var/lib/storebox/updates/1.2.0.deb".into(),
            manifest: "/var/lib/storebox/updates/1.2.0.manifest.json".into(),
            probation_seconds: 300,
            requested_at: at,
        };
        write_request(dir.path(), &r).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(REQUEST_FILE)).unwrap()).unwrap();
        assert_eq!(v["action"], "install");
        assert_eq!(v["requested_at"], "2026-12-01T02:30:00Z");
        assert_eq!(v["probation_seconds"], 300);
        assert_eq!(read_request(dir.path()).unwrap(), Some(r));
        assert!(!dir.path().join(".request.json.tmp").exists());
        let rb = serde_json::json!({"action":"rollback","version":"1.2.0","reason":"probation","requested_at":"2026-12-01T02:40:00Z"});
        let rb: Request = serde_json::from_value(rb).unwrap();
        assert!(matches!(rb, Request::Rollback { .. }));

        assert_eq!(read_outcome(dir.path()).unwrap(), None);
        std::fs::write(
            dir.path().join(RESULT_FILE),
            r#"{"action":"install","version":"1.2.0","outcome":"rolled_back","reason":"not ready","previous_version":"1.1.0","finished_at":"2026-12-01T02:35:00Z"}"#,
        )
        .unwrap();
        let o = read_outcome(dir.path()).unwrap().unwrap();
        assert_eq!(
            (o.action, o.outcome, o.previous_version.as_str()),
            (Action::Install, OutcomeKind::RolledBack, "1.1.0")
        );
        std::fs::write(dir.path().join(RESULT_FILE), "{\"action\":\"dance\"}").unwrap();
        let e = read_outcome(dir.path()).unwrap_err().to_string();
        assert!(e.contains("result.json") && e.contains("dance"), "{e}");
        remove(dir.path(), RESULT_FILE).unwrap();
        remove(dir.path(), RESULT_FILE).unwrap();
    }
}
