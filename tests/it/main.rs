//! Integration tests against the real `storebox` binary: real TCP sockets, real MQTT clients
//! (rumqttc), real HTTP (reqwest), a real SQLite file in a temporary data dir.

mod catalog;
mod cli;
mod devices;
mod diag;
mod hostile;
mod hq_author;
mod hq_console;
mod hq_desk;
mod hq_fleet;
mod hq_nodes;
mod http;
mod ingest;
mod mqtt_auth;
mod release;
mod release_e2e;
mod rollout;
mod sim;
mod support;
mod sync;
mod tickets;
mod ui;
mod updates;
