//! The API server: HTTP/1.1 on a Unix socket ([`http`]), one thread per
//! connection (so a slow client holds only its own), requests applied one
//! at a time by the [`Controller`](crate::Controller); and [`serve`], the API-mode runner of
//! the example VMM (`microvm --api-sock`, `--config-file`).

pub mod http;
mod listener;
mod preset;
mod runner;

pub use listener::{ApiServer, MAX_CONNECTIONS};
pub use preset::{Preset, PresetError};
pub use runner::{serve, ServeError, ServeOptions, Served};
