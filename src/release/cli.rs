//! `storebox release keygen|sign|verify`: the release engineer's offline commands.

use std::path::PathBuf;

use clap::Subcommand;
use jiff::Timestamp;

#[derive(Debug, Subcommand)]
pub enum ReleaseCmd {
    /// Write a new signing key pair: DIR/release.key (secret, mode 0600) and DIR/release.pub
    /// (the public key, one line, for HQ's `release_public_keys` and the store's
    /// `[updates] public_key`).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a .deb: writes PACKAGE.deb.manifest.json next to it.
    Sign {
        /// The secret key (release.key). Its serial counter is kept beside it (release.key.serial).
        #[arg(long)]
        key: PathBuf,
        #[arg(long, default_value = "stable")]
        channel: String,
        /// Days until the manifest expires and is refused.
        #[arg(long, default_value_t = 90)]
        expires_days: u32,
        package: PathBuf,
    },
    /// Check a .deb against its manifest and a public key; exits non-zero naming the failed check
    /// (manifest, key_id, signature, size, sha256, expiry, serial).
    Verify {
        #[arg(long)]
        public_key: PathBuf,
        /// Default: PACKAGE.deb.manifest.json.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// The serial of the last committed release: the manifest's serial must be above it.
        #[arg(long)]
        min_serial: Option<u64>,
        package: PathBuf,
    },
}

/// Runs one release command at time `now`.
pub fn run(cmd: ReleaseCmd, now: Timestamp) -> anyhow::Result<()> {
    match cmd {
        ReleaseCmd::Keygen { out } => {
            let id = super::keygen(&out)?;
            println!(
                "wrote {} (secret: keep it offline) and {} (key id {id})",
                out.join("release.key").display(),
                out.join("release.pub").display()
            );
        }
        ReleaseCmd::Sign {
            key,
            channel,
            expires_days,
            package,
        } => {
            let (path, m) = super::sign(&key, &package, &channel, expires_days, now)?;
            println!(
                "signed {} {} (serial {}, expires {}): {}",
                m.name,
                m.version,
                m.serial,
                m.expires_at,
                path.display()
            );
        }
        ReleaseCmd::Verify {
            public_key,
            manifest,
            min_serial,
            package,
        } => {
            let m = super::verify(&public_key, &package, manifest.as_deref(), now, min_serial)?;
            println!(
                "ok: {} {} serial {} signed by {}",
                m.name, m.version, m.serial, m.key_id
            );
        }
    }
    Ok(())
}
