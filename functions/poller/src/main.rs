//! Wiring only: the poller is built once per cold start (`poller::from_env`; a
//! configuration error is reported to Lambda's `/runtime/init/error` and ends the
//! process); each scheduled event runs `poller::Poller::handle`.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use triplink_shared::config::ProcessEnv;
use triplink_shared::lambda_init;
use triplink_shared::telemetry::init_logging;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let poller = lambda_init::or_report(&ProcessEnv, poller::from_env(&ProcessEnv).await).await?;
    let poller = &poller;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        poller.handle(event).await
    }))
    .await
}
