//! Offline release signing (DESIGN §7), run on the release engineer's machine and never on HQ:
//! key files, the serial counter, reading a `.deb`'s name and version, and writing or checking
//! its manifest. The manifest itself, its canonical form and the checks are in
//! [`crate::proto::release`], shared with HQ and the store; this module is the file-system edge.
//!
//! - [`deb`]: `Package`/`Version` from a `.deb` without dpkg
//! - [`cli`]: `storebox release keygen|sign|verify`

pub mod cli;
pub mod deb;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use jiff::{SignedDuration, Timestamp};
use rand::TryRngCore as _;
use sha2::{Digest, Sha256};

use crate::proto::release::{self as manifest, Manifest, PackageFacts, Refusal};

/// Prefix of the secret key file's one line.
const SECRET_PREFIX: &str = "ed25519-secret:";

/// Writes `DIR/release.key` (mode 0600, refusing to overwrite) and `DIR/release.pub`; returns
/// the key id.
pub fn keygen(dir: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed)
        .context("reading the operating system's random source")?;
    let key = SigningKey::from_bytes(&seed);
    let secret_path = dir.join("release.key");
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret_path)
        .with_context(|| {
            format!(
                "creating {} (an existing key is never overwritten)",
                secret_path.display()
            )
        })?;
    writeln!(
        f,
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(seed)
    )?;
    f.sync_all()?;
    let vk = key.verifying_key();
    let pub_path = dir.join("release.pub");
    std::fs::write(&pub_path, format!("{}\n", manifest::public_key_text(&vk)))
        .with_context(|| format!("writing {}", pub_path.display()))?;
    std::fs::set_permissions(&pub_path, std::fs::Permissions::from_mode(0o644))?;
    Ok(manifest::key_id(&vk))
}

/// Reads a secret key file, refusing one that others can read.
pub fn read_secret_key(path: &Path) -> anyhow::Result<SigningKey> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "{} is readable by others (mode {:o}); chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let seed = text
        .trim()
        .strip_prefix(SECRET_PREFIX)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .with_context(|| format!("{} is not a storebox release key", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Reads a public key file (`release.pub`).
pub fn read_public_key(path: &Path) -> anyhow::Result<ed25519_dalek::VerifyingKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    manifest::parse_public_key(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Size and SHA-256 of a file, streamed.
pub fn package_facts(path: &Path) -> anyhow::Result<PackageFacts> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok(PackageFacts {
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// Where a package's manifest lives by default: `PACKAGE.deb.manifest.json`.
pub fn manifest_path(package: &Path) -> PathBuf {
    let mut p = package.as_os_str().to_owned();
    p.push(".manifest.json");
    PathBuf::from(p)
}

/// The serial counter kept next to the key: `release.key.serial`.
fn serial_path(key: &Path) -> PathBuf {
    let mut p = key.as_os_str().to_owned();
    p.push(".serial");
    PathBuf::from(p)
}

/// The next serial for this key: the issue time in milliseconds, or one above the last serial
/// this key signed when that is larger (a clock set back, two signatures in one millisecond).
/// The last serial is written to `KEY.serial` before the manifest is, so serials never repeat.
fn next_serial(key: &Path, issued_at: Timestamp) -> anyhow::Result<u64> {
    let path = serial_path(key);
    let last = match std::fs::read_to_string(&path) {
        Ok(text) => Some(
            text.trim()
                .parse::<u64>()
                .with_context(|| format!("{} does not hold a serial", path.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let from_clock = u64::try_from(issued_at.as_millisecond()).unwrap_or(0);
    let serial = match last {
        Some(last) => from_clock.max(last.checked_add(1).context("serial overflow")?),
        None => from_clock,
    };
    write_atomically(&path, format!("{serial}\n").as_bytes())?;
    Ok(serial)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Signs `package` with the key in `key_path`, writes the manifest next to the package and
/// returns it.
pub fn sign(
    key_path: &Path,
    package: &Path,
    channel: &str,
    expires_days: u32,
    now: Timestamp,
) -> anyhow::Result<(PathBuf, Manifest)> {
    let key = read_secret_key(key_path)?;
    let control = deb::read_control(
        File::open(package).with_context(|| format!("opening {}", package.display()))?,
    )
    .with_context(|| format!("reading {}", package.display()))?;
    let facts = package_facts(package)?;
    if expires_days == 0 {
        bail!("--expires-days must be at least 1");
    }
    // Whole seconds: the canonical form then reads as people write times.
    let issued_at = Timestamp::from_second(now.as_second())?;
    let expires_at = issued_at
        .checked_add(SignedDuration::from_hours(24 * i64::from(expires_days)))
        .context("--expires-days is too large")?;
    let serial = next_serial(key_path, issued_at)?;
    let m = Manifest::sign(
        &key,
        &control.package,
        &control.version,
        &facts,
        channel,
        serial,
        issued_at,
        expires_at,
    )?;
    let out = manifest_path(package);
    let mut json = serde_json::to_string_pretty(&m)?;
    json.push('\n');
    write_atomically(&out, json.as_bytes())?;
    Ok((out, m))
}

/// Why `verify` refused: a named check, or a file that could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("release refused")]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Checks `package` against its manifest and the trusted public key; also that the package's
/// own control file names the manifest's name and version.
pub fn verify(
    public_key: &Path,
    package: &Path,
    manifest_file: Option<&Path>,
    now: Timestamp,
    last_committed_serial: Option<u64>,
) -> Result<Manifest, VerifyError> {
    let trusted = read_public_key(public_key)?;
    let manifest_file = manifest_file
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest_path(package));
    let text = std::fs::read_to_string(&manifest_file)
        .with_context(|| format!("reading {}", manifest_file.display()))?;
    let m: Manifest = serde_json::from_str(&text)
        .map_err(|e| Refusal::Manifest(format!("{}: {e}", manifest_file.display())))?;
    let facts = package_facts(package)?;
    m.verify(&trusted, &facts, now, last_committed_serial)?;
    // The signed digest matches, so the control file is the signer's; check it says the same.
    let control = deb::read_control(File::open(package).context("opening the package")?)
        .map_err(|e| Refusal::Manifest(format!("the package's control file: {e}")))?;
    if control.package != m.name || control.version != m.version {
        return Err(Refusal::Manifest(format!(
            "the package is {} {}, the manifest says {} {}",
            control.package, control.version, m.name, m.version
        ))
        .into());
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_only_go_up_even_when_the_clock_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("release.key");
        let t: Timestamp = "2026-11-30T10:00:00Z".parse().unwrap();
        let a = next_serial(&key, t).unwrap();
        assert_eq!(a, t.as_millisecond() as u64);
        let b = next_serial(&key, t).unwrap();
        let c = next_serial(&key, "2020-01-01T00:00:00Z".parse().unwrap()).unwrap();
        assert!(a < b && b < c, "{a} {b} {c}");
    }

    #[test]
    fn keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let id = keygen(dir.path()).unwrap();
        let key_path = dir.path().join("release.key");
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let key = read_secret_key(&key_path).unwrap();
        let vk = read_public_key(&dir.path().join("release.pub")).unwrap();
        assert_eq!(key.verifying_key(), vk);
        assert_eq!(manifest::key_id(&vk), id);
        assert!(keygen(dir.path()).is_err());
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_secret_key(&key_path).is_err());
    }
}
