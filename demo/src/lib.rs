//! Local stand-ins for what AWS does around the functions, for `make demo` and the
//! Lambda-level end-to-end test (`make e2e`).

pub mod lambda;
pub mod stream;
