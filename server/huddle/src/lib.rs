//! The Huddle server: transports, the drivers around the sans-IO SIP cores, the registrar and
//! location service, the stateful proxy, the plugin host, the state store, configuration and
//! the CLI.

pub mod admin;
pub mod config;
pub mod core;
pub mod media;
pub mod metrics;
#[cfg(target_os = "linux")]
mod mmsg;
pub mod plugins;
pub mod registrar;
pub mod server;
pub mod store;
pub mod transport;
pub mod users;
pub mod web;
pub mod webhooks;
