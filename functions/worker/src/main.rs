//! Wiring only. At init (before the first Runtime API `next`): configuration is read
//! and checked and the AWS clients are built, with no network call. The Concur client
//! and the member directory may need secrets (Secrets Manager in the cloud): the worker
//! is completed on the first invocation and reused by every later one; if that fails,
//! the invocation fails (the stream retries the batch) and the next one tries again.
//! Each stream batch runs `worker::Worker::handle`.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use tokio::sync::OnceCell;
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
    let concur_settings = ConcurSettings::from_env(&env)?;
    let dynamo = aws_sdk_dynamodb::Client::new(&aws);
    let kms = aws_sdk_kms::Client::new(&aws);
    let requests_table = env.required("REQUESTS_TABLE")?;
    let connections_table = env.required("CONNECTIONS_TABLE")?;
    let key_id = env.required("KMS_KEY_ID")?;
    let settings = WorkerSettings::from_env(&env)?;
    let namespace = env
        .get("METRICS_NAMESPACE")
        .unwrap_or_else(|| "TripLink".into());
    let worker = OnceCell::new();
    let build = || async {
        Ok::<_, Error>(Worker {
            concur: concur_settings.client(&aws, &env).await?,
            directory: AnyDirectory::from_env(&env, &aws).await?,
            store: DynamoRequestStore::new(dynamo.clone(), requests_table.clone()),
            vault: TokenVault::new(
                dynamo.clone(),
                connections_table.clone(),
                KmsEncryptor::new(kms.clone(), key_id.clone()),
            ),
            settings: settings.clone(),
            metrics: Metrics::new(namespace.clone(), "worker"),
        })
    };
    let (worker, build) = (&worker, &build);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        let worker = worker.get_or_try_init(build).await?;
        worker.handle(event).await
    }))
    .await
}
