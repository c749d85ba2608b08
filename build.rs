//! Build script: only tells cargo when to rebuild.
//!
//! Without any `rerun-if-changed` line cargo reruns a build script, and so rebuilds the crate,
//! whenever any file of the package changes (README, docs, tests/ui…). The inputs that are not
//! Rust sources are the staff UI in `web/`, embedded by rust-embed: in release builds its derive
//! `include_bytes!`s each file, which cargo tracks, but a file added to or removed from `web/` is
//! seen only when the derive runs again, which this line causes (cargo watches a directory's
//! files recursively). Debug builds read `web/` from disk at run time.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=web");
}
