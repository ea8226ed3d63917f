//! The crate's one error type, for everything that can fail outside a request.

use std::{net::SocketAddr, path::PathBuf};

/// What went wrong while loading a world or starting the emulator.
///
/// Errors inside a request never use this type: they become an HTTP `ErrorResponse` (see `api::error`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The world file could not be read.
    #[error("cannot read world file {path}: {source}")]
    ReadWorld {
        /// The file that was asked for.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The world TOML is malformed, has an unknown key or a value of the wrong type.
    #[error("invalid world TOML: {0}")]
    ParseWorld(#[from] toml::de::Error),
    /// The world parsed but makes no sense (e.g. a location without host IPs).
    #[error("invalid world: {0}")]
    InvalidWorld(String),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// Any other I/O failure of the server.
    #[error("emulator I/O error: {0}")]
    Io(#[from] std::io::Error),
}
