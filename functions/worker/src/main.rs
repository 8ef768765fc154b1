//! Wiring only: configuration, AWS clients, the Concur client, the member directory and
//! the token vault are built once per cold start; each stream batch runs
//! `worker::Worker::handle`.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use triplink_shared::config::{lambda_sdk_config, ConcurSettings, Env, ProcessEnv};
use triplink_shared::store::DynamoRequestStore;
use triplink_shared::telemetry::{init_logging, Metrics};
use triplink_shared::vault::{KmsEncryptor, TokenVault};
use worker::directory::AnyDirectory;
use worker::{Worker, WorkerSettings};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let env = ProcessEnv;
    let aws = lambda_sdk_config(&env)?;
    let dynamo = aws_sdk_dynamodb::Client::new(&aws);
    let worker = Worker {
        concur: ConcurSettings::from_env(&env)?.client(&aws, &env).await?,
        directory: AnyDirectory::from_env(&env, &aws).await?,
        store: DynamoRequestStore::new(dynamo.clone(), env.required("REQUESTS_TABLE")?),
        vault: TokenVault::new(
            dynamo,
            env.required("CONNECTIONS_TABLE")?,
            KmsEncryptor::new(aws_sdk_kms::Client::new(&aws), env.required("KMS_KEY_ID")?),
        ),
        settings: WorkerSettings::from_env(&env)?,
        metrics: Metrics::new(
            env.get("METRICS_NAMESPACE")
                .unwrap_or_else(|| "TripLink".into()),
            "worker",
        ),
    };
    let worker = &worker;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        worker.handle(event).await
    }))
    .await
}
