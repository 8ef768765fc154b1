//! Everything at once on one table and one sandbox: pollers running back to back (each
//! run sweeping first) while two workers take every `received` item they see — each
//! item is delivered to both, and again on every round, harsher than a stream — with
//! Concur latency injected; then the same with DynamoDB failing under them
//! (throttling, spurious conditional-check failures, errors, lost answers and slow
//! queries, through a fault proxy in front of moto_server). Each run ends with the same
//! audit as the crash matrix.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use common::*;
use triplink_shared::fault_proxy::{FaultProxy, Op, Rule};
use triplink_shared::store::layout::RequestState;
use triplink_shared::store::DynamoRequestStore;
use triplink_shared::telemetry::Metrics;
use triplink_shared::testing;
use worker::Worker;

/// How long a run may take before it is called stuck.
const LIMIT: Duration = Duration::from_secs(90);

/// Every seeded request has a status at Concur and nothing in the table is left.
async fn finished(env: &Env, store: &DynamoRequestStore) -> bool {
    let requests = sandbox_requests(&env.sandbox).await;
    let reported = requests
        .iter()
        .all(|r| !r["history"].as_array().map(Vec::is_empty).unwrap_or(true));
    reported
        && testing::scan_requests(store)
            .await
            .iter()
            .all(|i| i.state == RequestState::Reported)
}

/// Pollers back to back and two workers, on `store` (moto, or moto behind the proxy),
/// until everything is finished or [`LIMIT`].
async fn run_everything_at_once(env: &Env, store: &DynamoRequestStore) -> u32 {
    let stop = AtomicBool::new(false);
    let mut worker_settings = settings();
    worker_settings.release_backoff = Duration::from_millis(200);
    let workers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            (
                name,
                Worker {
                    concur: &env.concur,
                    directory: &env.members,
                    store,
                    vault: &env.vault,
                    settings: worker_settings.clone(),
                    metrics: Metrics::disabled("worker"),
                    safety: Default::default(),
                },
            )
        })
        .collect();
    let poller = poller::Poller {
        concur: &env.concur,
        store,
        settings: poller::PollerSettings::default(),
        metrics: Metrics::disabled("poller"),
        pause: Default::default(),
        keep_alive: None,
    };
    let polls = async {
        let mut runs = 0u32;
        while !stop.load(Ordering::SeqCst) {
            // A run that fails (DynamoDB refusing every write) is the next run's problem.
            let _ = poller.run(far()).await;
            runs += 1;
        }
        runs
    };
    let work = futures::future::join_all(workers.iter().map(|(name, worker)| {
        let stop = &stop;
        async move {
            let mut invocation = 0u32;
            let mut sequence = 0u64;
            while !stop.load(Ordering::SeqCst) {
                invocation += 1;
                let ready: Vec<_> = testing::scan_requests(&env.store)
                    .await
                    .into_iter()
                    .filter(|i| i.state == RequestState::Received)
                    .collect();
                let batch: Vec<_> = ready
                    .iter()
                    .map(|item| {
                        sequence += 1;
                        record(item, "MODIFY", sequence)
                    })
                    .collect();
                if !batch.is_empty() {
                    // Short invocations (6 s, 3 s of it past the worker's margin), so the
                    // lease of a holder that got stuck ends quickly.
                    let deadline = Utc::now().timestamp_millis() + 6_000;
                    // Lambda stops an invocation at its deadline: nothing of it runs
                    // after, so nothing of it outlives its lease (which ends just after
                    // the deadline). On a loaded machine a holder could otherwise still
                    // be exchanging when another worker takes the attempt over.
                    let _ = tokio::time::timeout(
                        Duration::from_millis(6_000),
                        worker.process_batch(&batch, &format!("{name}-{invocation}"), deadline),
                    )
                    .await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }));
    let watch = async {
        let started = tokio::time::Instant::now();
        while started.elapsed() < LIMIT {
            if finished(env, &env.store).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        stop.store(true, Ordering::SeqCst);
    };
    let (runs, _, ()) = tokio::join!(polls, work, watch);
    runs
}

#[tokio::test]
async fn pollers_and_workers_at_once_with_concur_latency() {
    let env = setup(40).await;
    faults(
        &env,
        &["list:latency=20", "token:latency=30", "put:latency=20"],
    )
    .await;
    let runs = run_everything_at_once(&env, &env.store).await;
    let audit = audit(&env).await;
    println!("{runs} poller runs: {audit:?}");
    assert!(runs >= 2, "the pollers ran alongside: {runs}");
    audit.assert_clean();
    assert!(audit.extra_exchanges.is_empty(), "{audit:?}");
}

#[tokio::test]
async fn pollers_and_workers_at_once_with_dynamodb_failing_under_them() {
    let env = setup(40).await;
    faults(
        &env,
        &["list:latency=10", "token:latency=10", "put:latency=10"],
    )
    .await;
    let proxy = FaultProxy::start(&testing::moto().endpoint);
    let table = env.store.table().to_owned();
    let rules = [
        proxy.add(
            Rule::new(Op::UpdateItem)
                .table(&table)
                .throttle()
                .probability(0.10, 1),
        ),
        proxy.add(
            Rule::new(Op::PutItem)
                .table(&table)
                .throttle()
                .probability(0.10, 2),
        ),
        proxy.add(
            Rule::new(Op::GetItem)
                .table(&table)
                .internal()
                .probability(0.05, 3),
        ),
        proxy.add(
            Rule::new(Op::UpdateItem)
                .table(&table)
                .conditional()
                .probability(0.03, 4),
        ),
        proxy.add(
            Rule::new(Op::UpdateItem)
                .table(&table)
                .drop_after()
                .probability(0.03, 5),
        ),
        proxy.add(
            Rule::new(Op::Query)
                .table(&table)
                .delay(Duration::from_millis(100))
                .probability(0.2, 6),
        ),
    ];
    let faulty = DynamoRequestStore::new(
        aws_sdk_dynamodb::Client::new(&testing::local_sdk_config(proxy.endpoint())),
        table,
    );
    let runs = run_everything_at_once(&env, &faulty).await;
    let fired: Vec<u64> = rules.iter().map(|r| proxy.fired(*r)).collect();
    let audit = audit(&env).await;
    println!("{runs} poller runs, faults fired {fired:?}: {audit:?}");
    assert!(
        fired.iter().take(5).all(|n| *n > 0),
        "every kind of fault happened: {fired:?}"
    );
    audit.assert_clean();
}
