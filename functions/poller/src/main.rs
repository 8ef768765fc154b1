//! Wiring only. At init (before the first Runtime API `next`) the configuration is read
//! and checked with no network call (`poller::PollerInit`; a mistake is posted to
//! Lambda's `/runtime/init/error` and ends the process). The client secret is fetched
//! on the first invocation and the poller reused by every later one; if the fetch
//! fails, that invocation fails and the next one tries again. Each scheduled event runs
//! `poller::Poller::handle`.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use poller::PollerInit;
use tokio::sync::OnceCell;
use triplink_shared::config::ProcessEnv;
use triplink_shared::lambda_init;
use triplink_shared::telemetry::init_logging;

// One thread: the work is I/O (Concur, DynamoDB, KMS) and a Lambda environment below
// 1,769 MB has less than one vCPU; the runtime starts without spawning worker threads,
// the largest part of a cold start's own time (bench/README.md, Init).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    init_logging();
    let init = lambda_init::or_report(&ProcessEnv, PollerInit::from_env(&ProcessEnv)).await?;
    let poller = OnceCell::new();
    let (init, poller) = (&init, &poller);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        let poller = poller.get_or_try_init(|| init.build(&ProcessEnv)).await?;
        poller.handle(event).await.map_err(Error::from)
    }))
    .await
}
