//! Wiring only: the worker is built once per cold start (`worker::from_env`; a
//! configuration error is reported to Lambda's `/runtime/init/error` and ends the
//! process); each stream batch runs `worker::Worker::handle`.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use triplink_shared::config::ProcessEnv;
use triplink_shared::lambda_init;
use triplink_shared::telemetry::init_logging;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let worker = lambda_init::or_report(&ProcessEnv, worker::from_env(&ProcessEnv).await).await?;
    let worker = &worker;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        worker.handle(event).await
    }))
    .await
}
