//! Shared library of the TripLink connector: Concur models and API client, and (as the
//! functions arrive) the store, matching and the member directory, configuration and
//! telemetry they share.

pub mod concur;
pub mod config;
#[cfg(feature = "testing")]
pub mod fault_proxy;
pub mod http;
pub mod lambda_init;
pub mod matching;
pub mod members;
pub mod model;
pub mod privacy;
pub mod store;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod vault;
