//! A bare `lambda_runtime` function: the echo the functions' cold start is compared with
//! (`make bench`). Nothing but the runtime client: no logging, no configuration, no clients.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        Ok::<Value, Error>(event.payload)
    }))
    .await
}
