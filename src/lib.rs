//! storebox: the store-in-a-box appliance. One binary that is the store's local server — an MQTT
//! broker for the store's devices, a SQLite cache of catalog and prices, the HQ sync client, the
//! staff web UI — so the store keeps selling when the link to headquarters is down.
//!
//! Module map (each module's doc says why it exists):
//! - [`app`]: `storebox serve`, wiring everything together with an orderly shutdown
//! - [`config`]: layered configuration with errors that name the key
//! - [`db`]: the SQLite file, migrations, blocking-call discipline
//! - [`broker`]: embedded rumqttd with authentication, topic authorization, bounded memory
//! - [`devices`]: registry, ingest of device messages, presence, commands
//! - [`catalog`]: the local catalog, prices and promotions; import
//! - [`pricing`]: pure pricing rules (effective prices, promotions, baskets, store time)
//! - [`proto`]: the wire protocol between store and HQ (types and pure validation), shared by both
//! - [`auth`]: staff users, sessions, API tokens, device credentials
//! - [`web`]: HTTP API, staff UI, health and metrics endpoints
//! - [`ops`]: metrics, logging, audit log, systemd handshake
//! - [`sync`]: the store's HQ sync client: feed apply, outbox push, status
//! - [`hq`]: the reference HQ (`storebox hq`) that stores sync with
//! - [`httpd`]: the bounded HTTP listener (timeouts, connection caps) both roles serve on
//! - [`tickets`]: support tickets opened at the store, answered by HQ
//! - [`sim`]: virtual devices with control ports (`storebox simulate`) and `storebox demo`
//! - [`outbox`]: the store → HQ outbox every producer writes to
//! - [`secrets`]: generated tokens and their hashes (store and HQ)
//! - [`clock`]: time as a parameter
//! - [`updates`]: the store's update state machine (pure) and the root update helper
//! - [`release`]: offline release signing: keys, `.deb` control fields, `storebox release`

pub mod app;
pub mod auth;
pub mod broker;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod db;
pub mod devices;
pub mod hq;
pub mod httpd;
pub mod ops;
pub mod outbox;
pub mod pricing;
pub mod proto;
pub mod release;
pub mod secrets;
pub mod sim;
pub mod sync;
pub mod tickets;
pub mod updates;
pub mod web;

/// The version of this build: `STOREBOX_BUILD_VERSION` when it was set at build time (build.rs;
/// `scripts/build-deb.sh --deb-version X` sets it), else the crate's version.
pub const VERSION: &str = env!("STOREBOX_VERSION");

#[cfg(test)]
mod tests {
    /// README's Layout names every module of `src/` (a newcomer reads the map there first).
    #[test]
    fn readme_layout_names_every_module() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let layout = &readme[readme
            .find("## Layout")
            .expect("README has a Layout section")..];
        let mut missing = Vec::new();
        for entry in std::fs::read_dir(root.join("src")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let is_module = path.is_dir() || path.extension().is_some_and(|e| e == "rs");
            if is_module
                && name != "lib"
                && name != "main"
                && !layout.contains(&format!("- `{name}`"))
            {
                missing.push(name);
            }
        }
        assert!(
            missing.is_empty(),
            "README's Layout does not name: {missing:?}"
        );
    }
}
