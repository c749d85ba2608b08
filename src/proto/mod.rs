//! The wire protocol between a store and HQ, and nothing else: the one module both sides share.
//! The store (`sync`, `catalog` import) and the reference HQ (`hq`) each depend on it and never on
//! each other, so a retailer can replace either side with its own implementation of
//! docs/sync-protocol.md. Everything here is pure: types, parsing and validation, no database, no
//! I/O, no clock.
//!
//! - [`wire`]: feed pages, snapshots, push batches and answers, authoring targets
//! - [`events`]: HQ → store and store → HQ event types, typed payloads, [`validate`]
//! - [`catalog`]: units, promotion kinds, the `price.set` / `promotion.upsert` payloads
//! - [`time`]: store times as written (instant or store-local civil time)
//! - [`csv`]: the catalog/price CSV form of those events
//! - [`release`]: signed release manifests, their canonical form and verification

pub mod catalog;
pub mod csv;
pub mod events;
pub mod guide_render;
pub mod release;
pub mod time;
pub mod wire;

pub use csv::csv_events;
pub use events::{check_id, check_name, validate, HqBody, HqEvent, HqEventType, StoreEventType};
pub use wire::{
    raw_payload, FeedEvent, FeedPage, PushAck, PushBatch, Snapshot, StoreEvent, StoreReport,
    Target, VERSION,
};
