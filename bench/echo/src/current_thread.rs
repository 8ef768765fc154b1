//! The same bare echo on tokio's current-thread runtime, as the functions run: the
//! like-for-like baseline of `make bench` (the default `#[tokio::main]` one spawns a
//! worker thread per CPU before its first `next`).

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        Ok::<Value, Error>(event.payload)
    }))
    .await
}
