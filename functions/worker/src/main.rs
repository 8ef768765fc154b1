//! Wiring only. At init (before the first Runtime API `next`) the configuration is read
//! and checked with no network call (`worker::WorkerInit`; a mistake is posted to
//! Lambda's `/runtime/init/error` and ends the process). The secrets are fetched on the
//! first invocation and the worker reused by every later one; if a fetch fails, that
//! invocation fails (the stream retries the batch) and the next one tries again. Each
//! event (a stream batch, or the supplier's unlink hook) runs
//! `worker::Worker::handle_event`.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use tokio::sync::OnceCell;
use triplink_shared::config::ProcessEnv;
use triplink_shared::lambda_init;
use triplink_shared::telemetry::init_logging;
use worker::WorkerInit;

// One thread: the work is I/O (Concur, DynamoDB, KMS) and a Lambda environment below
// 1,769 MB has less than one vCPU; the runtime starts without spawning worker threads,
// the largest part of a cold start's own time (bench/README.md, Init).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    init_logging();
    let init = lambda_init::or_report(&ProcessEnv, WorkerInit::from_env(&ProcessEnv)).await?;
    let worker = OnceCell::new();
    let (init, worker) = (&init, &worker);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        let worker = worker.get_or_try_init(|| init.build(&ProcessEnv)).await?;
        worker.handle_event(event, &worker.revoker()).await
    }))
    .await
}
