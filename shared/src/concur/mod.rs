//! Concur API client.
