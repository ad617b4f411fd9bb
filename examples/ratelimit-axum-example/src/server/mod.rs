//! Serving the router over HTTP/1.1 without letting hostile clients hold
//! connections: deadlines on the silent phases of a connection, a cap on
//! connections, and a shutdown with a grace period.

mod config;
mod deadline;
mod serve;

pub use config::ServerConfig;
pub use serve::serve;
