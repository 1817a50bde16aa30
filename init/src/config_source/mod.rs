//! The config source: where the configuration comes from (`hv.config=`,
//! a partition or an HTTP server) and how it is found, mounted or fetched
//! and read.

pub mod fetch;
pub mod fetch_thread;
pub mod http;
pub mod partition;
pub mod probe;
#[cfg(test)]
pub mod test_server;
pub mod url;
