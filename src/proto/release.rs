//! Signed release manifests (DESIGN §7): the type HQ and the store both read, its canonical form
//! (the exact bytes the ed25519 signature covers) and the pure checks that decide whether a
//! package may be trusted. No I/O and no clock: the caller hashes the package and passes "now".
//!
//! Canonical form, UTF-8, every line ending in `\n`, fields in this order, nothing else:
//!
//! ```text
//! storebox-release-manifest-v1
//! name=<name>
//! version=<version>
//! sha256=<64 lowercase hex digits>
//! size=<decimal bytes>
//! channel=<channel>
//! serial=<decimal u64>
//! issued_at=<RFC 3339 UTC, e.g. 2026-11-30T10:13:24Z>
//! expires_at=<RFC 3339 UTC>
//! key_id=<16 lowercase hex digits>
//! ```
//!
//! Text fields are refused if they hold control characters, so a value can never forge a line.

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// First line of the canonical form; a later format gets a new tag.
pub const CANONICAL_TAG: &str = "storebox-release-manifest-v1";
/// Prefix of the one-line public key text (`release.pub`, `release_public_keys`).
pub const PUBLIC_KEY_PREFIX: &str = "ed25519:";
const MAX_TEXT: usize = 128;

/// A release manifest as written next to the package (`PACKAGE.deb.manifest.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    /// SHA-256 of the package file, lowercase hex.
    pub sha256: String,
    /// Size of the package file in bytes.
    pub size: u64,
    pub channel: String,
    /// Monotonic per signing key: a store refuses a serial not above the last one it committed.
    pub serial: u64,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    /// [`key_id`] of the signing key.
    pub key_id: String,
    /// ed25519 over [`Manifest::canonical`], standard base64 (64 bytes).
    pub signature: String,
}

/// The facts about a package file the manifest must match, computed by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageFacts {
    pub size: u64,
    pub sha256: String,
}

impl PackageFacts {
    pub fn of_bytes(bytes: &[u8]) -> Self {
        PackageFacts {
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
        }
    }
}

/// The check a manifest or package failed; its [`Refusal::check`] is what the CLI and HQ report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("check `manifest` failed: {0}")]
    Manifest(String),
    #[error(
        "check `key_id` failed: manifest is signed by key {manifest}, the trusted key is {trusted}"
    )]
    KeyId { manifest: String, trusted: String },
    #[error("check `signature` failed: the signature does not match the manifest and key")]
    Signature,
    #[error("check `size` failed: package is {actual} bytes, manifest says {manifest}")]
    Size { manifest: u64, actual: u64 },
    #[error("check `sha256` failed: package sha256 is {actual}, manifest says {manifest}")]
    Sha256 { manifest: String, actual: String },
    #[error("check `expiry` failed: manifest expired at {expires_at} (now {now})")]
    Expired {
        expires_at: Timestamp,
        now: Timestamp,
    },
    #[error("check `serial` failed: serial {serial} is not above the last committed {last}")]
    Serial { serial: u64, last: u64 },
}

impl Refusal {
    /// The stable name of the failed check.
    pub fn check(&self) -> &'static str {
        match self {
            Refusal::Manifest(_) => "manifest",
            Refusal::KeyId { .. } => "key_id",
            Refusal::Signature => "signature",
            Refusal::Size { .. } => "size",
            Refusal::Sha256 { .. } => "sha256",
            Refusal::Expired { .. } => "expiry",
            Refusal::Serial { .. } => "serial",
        }
    }
}

/// The key id: the first 8 bytes of SHA-256 over the 32 public key bytes, lowercase hex.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// The one-line text form of a public key: `ed25519:<standard base64 of 32 bytes>`.
pub fn public_key_text(key: &VerifyingKey) -> String {
    format!(
        "{PUBLIC_KEY_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(key.as_bytes())
    )
}

/// Parses [`public_key_text`] (surrounding whitespace ignored).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let b64 = text
        .trim()
        .strip_prefix(PUBLIC_KEY_PREFIX)
        .ok_or_else(|| format!("a public key starts with `{PUBLIC_KEY_PREFIX}`"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("public key is not base64: {e}"))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "a public key is 32 bytes".to_string())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "not a valid ed25519 public key".to_string())
}

fn check_text(field: &str, value: &str) -> Result<(), Refusal> {
    if value.is_empty() || value.len() > MAX_TEXT || value.chars().any(char::is_control) {
        return Err(Refusal::Manifest(format!(
            "`{field}` must be 1 to {MAX_TEXT} bytes without control characters"
        )));
    }
    Ok(())
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Manifest {
    /// A manifest for a package, signed with `key`.
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        key: &SigningKey,
        name: &str,
        version: &str,
        package: &PackageFacts,
        channel: &str,
        serial: u64,
        issued_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Manifest, Refusal> {
        let mut m = Manifest {
            name: name.to_string(),
            version: version.to_string(),
            sha256: package.sha256.clone(),
            size: package.size,
            channel: channel.to_string(),
            serial,
            issued_at,
            expires_at,
            key_id: key_id(&key.verifying_key()),
            signature: String::new(),
        };
        m.check_shape()?;
        let sig = key.sign(m.canonical().as_bytes());
        m.signature = base64::engine::general_purpose::STANDARD.encode(sig.to_bytes());
        Ok(m)
    }

    /// Field shapes: text without control characters, hex digests, expiry after issue.
    pub fn check_shape(&self) -> Result<(), Refusal> {
        check_text("name", &self.name)?;
        check_text("version", &self.version)?;
        check_text("channel", &self.channel)?;
        if !is_lower_hex(&self.sha256, 64) {
            return Err(Refusal::Manifest(
                "`sha256` must be 64 lowercase hex digits".into(),
            ));
        }
        if !is_lower_hex(&self.key_id, 16) {
            return Err(Refusal::Manifest(
                "`key_id` must be 16 lowercase hex digits".into(),
            ));
        }
        if self.expires_at <= self.issued_at {
            return Err(Refusal::Manifest(
                "`expires_at` must be after `issued_at`".into(),
            ));
        }
        Ok(())
    }

    /// The exact text the signature covers (see the module doc). Every field but `signature`.
    pub fn canonical(&self) -> String {
        format!(
            "{CANONICAL_TAG}\nname={}\nversion={}\nsha256={}\nsize={}\nchannel={}\nserial={}\n\
             issued_at={}\nexpires_at={}\nkey_id={}\n",
            self.name,
            self.version,
            self.sha256,
            self.size,
            self.channel,
            self.serial,
            self.issued_at,
            self.expires_at,
            self.key_id
        )
    }

    /// Every check, in order: shape, key id, signature (`verify_strict`), size, sha256, expiry,
    /// and, when `last_committed_serial` is given, a serial strictly above it.
    pub fn verify(
        &self,
        trusted: &VerifyingKey,
        package: &PackageFacts,
        now: Timestamp,
        last_committed_serial: Option<u64>,
    ) -> Result<(), Refusal> {
        self.check_shape()?;
        let trusted_id = key_id(trusted);
        if self.key_id != trusted_id {
            return Err(Refusal::KeyId {
                manifest: self.key_id.clone(),
                trusted: trusted_id,
            });
        }
        let sig = base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .map(|b| Signature::from_bytes(&b))
            .ok_or(Refusal::Signature)?;
        trusted
            .verify_strict(self.canonical().as_bytes(), &sig)
            .map_err(|_| Refusal::Signature)?;
        if package.size != self.size {
            return Err(Refusal::Size {
                manifest: self.size,
                actual: package.size,
            });
        }
        if package.sha256 != self.sha256 {
            return Err(Refusal::Sha256 {
                manifest: self.sha256.clone(),
                actual: package.sha256.clone(),
            });
        }
        if now >= self.expires_at {
            return Err(Refusal::Expired {
                expires_at: self.expires_at,
                now,
            });
        }
        if let Some(last) = last_committed_serial {
            if self.serial <= last {
                return Err(Refusal::Serial {
                    serial: self.serial,
                    last,
                });
            }
        }
        Ok(())
    }
}

/// Where HQ serves release packages to stores; `release.assign` names a path under it.
pub const PACKAGE_PATH_PREFIX: &str = "/sync/v1/releases/";

/// `release.assign` (HQ → store, targeted at the stores of a rollout wave): the version the store
/// should run, the signed manifest it must verify with its own `[updates] public_key`, and the
/// path on HQ it downloads the package from (over the sync connection, with the store token;
/// `Range` requests resume a partial download).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseAssign {
    pub version: String,
    /// The rollout that assigned it; echoed back in `release.status`.
    pub rollout: String,
    pub manifest: Manifest,
    /// Absolute path on HQ, under [`PACKAGE_PATH_PREFIX`].
    pub package: String,
}

impl ReleaseAssign {
    /// Shape only (HQ verified the signature on upload; the store verifies it again itself).
    pub fn check(&self) -> Result<(), String> {
        let e = |m: String| format!("release.assign payload: {m}");
        self.manifest
            .check_shape()
            .map_err(|r| e(format!("manifest: {r}")))?;
        if self.version != self.manifest.version {
            return Err(e(format!(
                "\"version\" {:?} differs from the manifest's {:?}",
                self.version, self.manifest.version
            )));
        }
        if self.rollout.is_empty() || self.rollout.len() > MAX_TEXT {
            return Err(e(format!("\"rollout\" must be 1-{MAX_TEXT} bytes")));
        }
        let rest = self.package.strip_prefix(PACKAGE_PATH_PREFIX);
        if rest.is_none_or(|r| r.is_empty() || r.contains("..") || r.contains("//"))
            || self.package.len() > 512
            || self
                .package
                .chars()
                .any(|c| c.is_control() || c == '?' || c == '#')
        {
            return Err(e(format!(
                "\"package\" must be a path under {PACKAGE_PATH_PREFIX} (got {:?})",
                self.package
            )));
        }
        Ok(())
    }
}

/// Longest `release.withdraw` reason kept (bytes; longer reasons are cut by HQ at a char boundary).
pub const MAX_WITHDRAW_REASON: usize = 1000;

/// `release.withdraw` (HQ → store, targeted at the stores of an aborted rollout that had not
/// started installing): the assignment of `version` by `rollout` is withdrawn. A store still
/// downloading, staged or waiting for its window refuses it (reason `withdrawn by HQ: <reason>`)
/// and removes the staged package; a store already installing or in probation goes on (its
/// install's own health decides), and any other store ignores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseWithdraw {
    pub rollout: String,
    pub version: String,
    /// Why the rollout was aborted (shown in the store's `refused` reason).
    #[serde(default)]
    pub reason: String,
}

impl ReleaseWithdraw {
    /// Bounded text fields: rollout and version 1 to 128 bytes, reason at most 1000 bytes, no
    /// control characters in rollout or version.
    pub fn check(&self) -> Result<(), String> {
        let e = |m: String| format!("release.withdraw payload: {m}");
        for (field, v) in [("rollout", &self.rollout), ("version", &self.version)] {
            if v.is_empty() || v.len() > MAX_TEXT || v.chars().any(char::is_control) {
                return Err(e(format!(
                    "\"{field}\" must be 1-{MAX_TEXT} bytes without control characters"
                )));
            }
        }
        if self.reason.len() > MAX_WITHDRAW_REASON {
            return Err(e(format!(
                "\"reason\" must be at most {MAX_WITHDRAW_REASON} bytes"
            )));
        }
        Ok(())
    }
}

/// Release states a store reports in `release.status` (DESIGN §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseState {
    Downloading,
    Staged,
    WaitingWindow,
    Installing,
    Probation,
    Committed,
    RolledBack,
    Refused,
    Failed,
}

impl ReleaseState {
    /// A final state: the store will not move on from it for this version by itself.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ReleaseState::Committed
                | ReleaseState::RolledBack
                | ReleaseState::Refused
                | ReleaseState::Failed
        )
    }
}

/// `release.status` (store → HQ, business class): one per state change of the store's updater.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseStatus {
    pub version: String,
    pub state: ReleaseState,
    #[serde(default)]
    pub reason: String,
    /// The rollout from `release.assign`; absent for a state not caused by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
    /// The manifest serial the state is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u64>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid `release.assign` payload (for other modules' tests).
    pub(crate) fn assign_json() -> serde_json::Value {
        let (_, m) = signed();
        serde_json::json!({
            "version": m.version,
            "rollout": "r-1",
            "manifest": m,
            "package": "/sync/v1/releases/1.2.3/package",
        })
    }

    #[test]
    fn release_assign_shape() {
        let ok: ReleaseAssign = serde_json::from_value(assign_json()).unwrap();
        ok.check().unwrap();
        let mut bad = ok.clone();
        bad.version = "9.9.9".into();
        assert!(bad.check().unwrap_err().contains("differs"));
        for path in [
            "/etc/passwd",
            "/sync/v1/releases/../x",
            "/sync/v1/releases/",
            "https://elsewhere/x",
        ] {
            let mut bad = ok.clone();
            bad.package = path.into();
            assert!(bad.check().unwrap_err().contains("package"), "{path}");
        }
        let mut bad = ok.clone();
        bad.manifest.sha256 = "xyz".into();
        assert!(bad.check().unwrap_err().contains("sha256"));
        let st: ReleaseStatus = serde_json::from_str(
            r#"{"version":"1.2.3","state":"rolled_back","reason":"probation: not ready"}"#,
        )
        .unwrap();
        assert_eq!(st.state, ReleaseState::RolledBack);
        assert!(st.state.is_final() && !ReleaseState::Probation.is_final());
    }

    #[test]
    fn release_withdraw_shape() {
        let ok: ReleaseWithdraw = serde_json::from_value(
            serde_json::json!({"rollout": "r-1", "version": "1.2.3", "reason": "too many failures"}),
        )
        .unwrap();
        ok.check().unwrap();
        let mut bad = ok.clone();
        bad.rollout = String::new();
        assert!(bad.check().unwrap_err().contains("rollout"));
        let mut bad = ok.clone();
        bad.version = "1.2.3\nx".into();
        assert!(bad.check().unwrap_err().contains("version"));
        let mut bad = ok.clone();
        bad.reason = "x".repeat(MAX_WITHDRAW_REASON + 1);
        assert!(bad.check().unwrap_err().contains("reason"));
        assert!(serde_json::from_value::<ReleaseWithdraw>(
            serde_json::json!({"rollout": "r", "version": "1", "extra": 1})
        )
        .is_err());
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const PKG: &[u8] = b"!<arch>\n pretend this is a .deb";

    fn signed() -> (SigningKey, Manifest) {
        let k = key(7);
        let m = Manifest::sign(
            &k,
            "storebox",
            "1.2.3",
            &PackageFacts::of_bytes(PKG),
            "stable",
            1_700_000_000_000,
            ts("2026-11-30T10:00:00Z"),
            ts("2026-12-30T10:00:00Z"),
        )
        .unwrap();
        (k, m)
    }

    const NOW: &str = "2026-12-01T00:00:00Z";

    #[test]
    fn a_good_manifest_verifies_and_survives_json() {
        let (k, m) = signed();
        let json = serde_json::to_string_pretty(&m).unwrap();
        let back: Manifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        back.verify(
            &k.verifying_key(),
            &PackageFacts::of_bytes(PKG),
            ts(NOW),
            Some(1),
        )
        .unwrap();
    }

    #[test]
    fn canonical_form_is_stable() {
        let (_, m) = signed();
        let expected = "storebox-release-manifest-v1\nname=storebox\nversion=1.2.3\n\
            sha256="
            .to_string()
            + &hex::encode(Sha256::digest(PKG))
            + "\nsize=31\nchannel=stable\nserial=1700000000000\n\
            issued_at=2026-11-30T10:00:00Z\nexpires_at=2026-12-30T10:00:00Z\nkey_id="
            + &key_id(&key(7).verifying_key())
            + "\n";
        assert_eq!(m.canonical(), expected);
        // The signature is not part of what it signs, and the same inputs sign the same bytes
        // (ed25519 is deterministic).
        let mut unsigned = m.clone();
        unsigned.signature = String::new();
        assert_eq!(unsigned.canonical(), m.canonical());
        assert_eq!(signed().1.signature, m.signature);
        // Equal instants written differently in JSON have one canonical form.
        let json = serde_json::to_string(&m)
            .unwrap()
            .replace("2026-11-30T10:00:00Z", "2026-11-30T11:00:00.000+01:00");
        let back: Manifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back.canonical(), m.canonical());
    }

    #[test]
    fn a_flipped_byte_in_the_package_is_refused() {
        let (k, m) = signed();
        let mut pkg = PKG.to_vec();
        pkg[10] ^= 1;
        let err = m
            .verify(
                &k.verifying_key(),
                &PackageFacts::of_bytes(&pkg),
                ts(NOW),
                None,
            )
            .unwrap_err();
        assert_eq!(err.check(), "sha256", "{err}");
        pkg.push(0);
        let err = m
            .verify(
                &k.verifying_key(),
                &PackageFacts::of_bytes(&pkg),
                ts(NOW),
                None,
            )
            .unwrap_err();
        assert_eq!(err.check(), "size", "{err}");
    }

    #[test]
    fn another_key_is_refused() {
        let (_, m) = signed();
        let other = key(8).verifying_key();
        let err = m
            .verify(&other, &PackageFacts::of_bytes(PKG), ts(NOW), None)
            .unwrap_err();
        assert_eq!(err.check(), "key_id", "{err}");
        // Claiming the other key's id does not help: the signature is still the first key's.
        let mut forged = m.clone();
        forged.key_id = key_id(&other);
        let err = forged
            .verify(&other, &PackageFacts::of_bytes(PKG), ts(NOW), None)
            .unwrap_err();
        assert_eq!(err.check(), "signature", "{err}");
    }

    #[test]
    fn each_edited_field_breaks_the_signature() {
        let (k, m) = signed();
        let pkg = PackageFacts::of_bytes(PKG);
        type Edit = Box<dyn Fn(&mut Manifest)>;
        let edits: Vec<(&str, Edit)> = vec![
            ("name", Box::new(|m| m.name = "storebox-evil".into())),
            ("version", Box::new(|m| m.version = "9.9.9".into())),
            ("channel", Box::new(|m| m.channel = "beta".into())),
            ("serial", Box::new(|m| m.serial += 1)),
            (
                "issued_at",
                Box::new(|m| m.issued_at = ts("2026-11-29T10:00:00Z")),
            ),
            (
                "expires_at",
                Box::new(|m| m.expires_at = ts("2036-12-30T10:00:00Z")),
            ),
        ];
        for (field, edit) in edits {
            let mut edited = m.clone();
            edit(&mut edited);
            let err = edited
                .verify(&k.verifying_key(), &pkg, ts(NOW), None)
                .unwrap_err();
            assert_eq!(err.check(), "signature", "editing {field}: {err}");
        }
        // Editing size and sha256 to match another package also breaks the signature.
        let other = PackageFacts::of_bytes(b"another package");
        let mut edited = m.clone();
        edited.size = other.size;
        edited.sha256 = other.sha256.clone();
        let err = edited
            .verify(&k.verifying_key(), &other, ts(NOW), None)
            .unwrap_err();
        assert_eq!(err.check(), "signature", "{err}");
        // A signature that is not base64 of 64 bytes, or a newline smuggled into a field.
        let mut edited = m.clone();
        edited.signature = "AAAA".into();
        let err = edited
            .verify(&k.verifying_key(), &pkg, ts(NOW), None)
            .unwrap_err();
        assert_eq!(err.check(), "signature");
        let mut edited = m.clone();
        edited.channel = "stable\nserial=99".into();
        let err = edited
            .verify(&k.verifying_key(), &pkg, ts(NOW), None)
            .unwrap_err();
        assert_eq!(err.check(), "manifest", "{err}");
    }

    #[test]
    fn an_expired_manifest_is_refused() {
        let (k, m) = signed();
        let pkg = PackageFacts::of_bytes(PKG);
        m.verify(&k.verifying_key(), &pkg, ts("2026-12-30T09:59:59Z"), None)
            .unwrap();
        let err = m
            .verify(&k.verifying_key(), &pkg, ts("2026-12-30T10:00:00Z"), None)
            .unwrap_err();
        assert_eq!(err.check(), "expiry", "{err}");
    }

    #[test]
    fn a_serial_not_above_the_last_committed_is_refused() {
        let (k, m) = signed();
        let pkg = PackageFacts::of_bytes(PKG);
        let vk = k.verifying_key();
        m.verify(&vk, &pkg, ts(NOW), Some(m.serial - 1)).unwrap();
        for last in [m.serial, m.serial + 1] {
            let err = m.verify(&vk, &pkg, ts(NOW), Some(last)).unwrap_err();
            assert_eq!(err.check(), "serial", "{err}");
        }
    }

    #[test]
    fn public_key_text_round_trips() {
        let vk = key(3).verifying_key();
        let text = public_key_text(&vk);
        assert!(text.starts_with("ed25519:"));
        assert_eq!(parse_public_key(&format!(" {text}\n")).unwrap(), vk);
        assert!(parse_public_key("ed25519:AAAA").is_err());
        assert!(parse_public_key("ssh-ed25519 AAAA").is_err());
    }
}
