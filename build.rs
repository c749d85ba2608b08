//! Build script: the build's version, and when cargo must rebuild.
//!
//! `STOREBOX_BUILD_VERSION` (if set, e.g. by `scripts/build-deb.sh --deb-version X`) becomes the
//! version the binary reports everywhere (`crate::VERSION`); otherwise the crate's version. Only
//! this crate recompiles when it changes.
//!
//! Without any `rerun-if-changed` line cargo reruns a build script, and so rebuilds the crate,
//! whenever any file of the package changes (README, docs, tests/ui…). The inputs that are not
//! Rust sources are the staff UI in `web/`, embedded by rust-embed: in release builds its derive
//! `include_bytes!`s each file, which cargo tracks, but a file added to or removed from `web/` is
//! seen only when the derive runs again, which this line causes (cargo watches a directory's
//! files recursively). Debug builds read `web/` from disk at run time.
//!
//! It also sets the version the binary reports (`storebox --version`, `GET /api/v1/updates`, the
//! probation check after a self-update): the package version, or `STOREBOX_BUILD_VERSION` when set
//! at build time (the install test builds version N+1 of the same sources this way).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=web");
    println!("cargo:rerun-if-env-changed=STOREBOX_BUILD_VERSION");
    let version = match std::env::var("STOREBOX_BUILD_VERSION") {
        Ok(v) if !v.is_empty() => {
            let ok = v.len() <= 128
                && v.as_bytes()[0].is_ascii_digit()
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".+~:-".contains(&b));
            if !ok {
                panic!(
                    "STOREBOX_BUILD_VERSION={v:?} is not a Debian version \
                     (digits first; letters, digits and .+~:- only; at most 128 bytes)"
                );
            }
            v
        }
        _ => std::env::var("CARGO_PKG_VERSION").unwrap_or_default(),
    };
    println!("cargo:rustc-env=STOREBOX_VERSION={version}");
}
