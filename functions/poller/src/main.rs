//! Wiring only: configuration, AWS clients and the Concur client are built once per
//! cold start; each scheduled event runs `poller::Poller::handle`.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use poller::{Poller, PollerSettings};
use triplink_shared::config::{lambda_sdk_config, ConcurSettings, Env, ProcessEnv};
use triplink_shared::store::DynamoRequestStore;
use triplink_shared::telemetry::{init_logging, Metrics};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let env = ProcessEnv;
    let aws = lambda_sdk_config(&env)?;
    let concur = ConcurSettings::from_env(&env)?.client(&aws, &env).await?;
    let store = DynamoRequestStore::new(
        aws_sdk_dynamodb::Client::new(&aws),
        env.required("REQUESTS_TABLE")?,
    );
    let poller = Poller {
        concur,
        store,
        settings: PollerSettings::from_env(&env)?,
        metrics: Metrics::new(
            env.get("METRICS_NAMESPACE")
                .unwrap_or_else(|| "TripLink".into()),
            "poller",
        ),
    };
    let poller = &poller;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        poller.handle(event).await
    }))
    .await
}
