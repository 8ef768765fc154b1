//! Local stand-ins for what AWS does around the functions (Lambda, DynamoDB Streams,
//! CloudWatch Logs Insights), for `make demo` and the
//! Lambda-level end-to-end test (`make e2e`).

pub mod insights;
pub mod lambda;
pub mod stream;
