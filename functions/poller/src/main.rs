//! Wiring only. At init (before the first Runtime API `next`): configuration is read
//! and checked and the AWS clients are built, with no network call. The Concur client
//! needs the client secret (Secrets Manager in the cloud): it is built on the first
//! invocation and reused by every later one; if that fails, the invocation fails and
//! the next one tries again. Each scheduled event runs `poller::Poller::handle`.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use poller::{Poller, PollerSettings};
use tokio::sync::OnceCell;
use triplink_shared::config::{lambda_sdk_config, ConcurSettings, Env, ProcessEnv};
use triplink_shared::store::DynamoRequestStore;
use triplink_shared::telemetry::{init_logging, Metrics};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let env = ProcessEnv;
    let aws = lambda_sdk_config(&env)?;
    let concur_settings = ConcurSettings::from_env(&env)?;
    let store = DynamoRequestStore::new(
        aws_sdk_dynamodb::Client::new(&aws),
        env.required("REQUESTS_TABLE")?,
    );
    let settings = PollerSettings::from_env(&env)?;
    let namespace = env
        .get("METRICS_NAMESPACE")
        .unwrap_or_else(|| "TripLink".into());
    let poller = OnceCell::new();
    let build = || async {
        Ok::<_, Error>(Poller {
            concur: concur_settings.client(&aws, &env).await?,
            store: store.clone(),
            settings: settings.clone(),
            metrics: Metrics::new(namespace.clone(), "poller"),
        })
    };
    let (poller, build) = (&poller, &build);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        let poller = poller.get_or_try_init(build).await?;
        poller.handle(event).await.map_err(Error::from)
    }))
    .await
}
