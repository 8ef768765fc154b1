//! The Lambda-level end-to-end test: the real release bootstraps of the poller and the
//! worker, run as AWS Lambda runs them (Runtime API, cold starts, deadlines, crashes,
//! timeouts), fed as `template.yaml` says (the poller on its schedule with reserved
//! concurrency 1, the worker behind the requests stream's event source mapping with
//! its filter, batching, partial batch responses, bisection, retries and dead-letter
//! queue), against moto and the Concur sandbox. Each scenario prints one verdict line
//! of JSON and fails unless nothing was lost, doubled, stuck, dead-lettered or
//! mismatched.
//!
//! `make e2e` runs it (and `make test` runs `make e2e`); alone:
//! `cargo test -p demo --test lambda_e2e -- --ignored --nocapture` with `.venv/bin` on
//! `PATH` (moto). The scenarios are `#[ignore]`d so that `cargo test --workspace` does
//! not run them a second time; the harness's own test is not. The release binaries are built once per run with
//! `cargo build --release -p poller -p worker --locked`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Bytes;
use demo::lambda::cargo::{build_release, workspace_root};
use demo::lambda::process::{Chaos, FunctionConfig, LambdaFunction, Outcome, INIT_TIMEOUT};
use demo::lambda::stack::{LocalStack, StackOptions, TempDir, Verdict};
use serde_json::{json, Value};
use tokio::time::Instant;

/// How long a scenario may run before it is judged as it stands.
const LIMIT: Duration = Duration::from_secs(90);
const USERS: usize = 60;
const SEED: u64 = 7;

/// One scenario at a time: they measure timing-sensitive behaviour on two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The release binaries of both functions, built once per test process.
async fn release_binaries() -> (PathBuf, PathBuf) {
    static BUILT: OnceLock<Result<(PathBuf, PathBuf), String>> = OnceLock::new();
    let built = tokio::task::spawn_blocking(|| {
        BUILT
            .get_or_init(|| {
                let binaries = build_release(&workspace_root(), &["poller", "worker"])?;
                match (binaries.get("poller"), binaries.get("worker")) {
                    (Some(p), Some(w)) => Ok((p.clone(), w.clone())),
                    _ => Err(format!("the build produced no poller/worker: {binaries:?}")),
                }
            })
            .clone()
    })
    .await
    .expect("the build task");
    built.unwrap_or_else(|e| panic!("{e}"))
}

async fn stack(name: &str, overrides: &[(&str, &str)]) -> LocalStack {
    let (poller, worker) = release_binaries().await;
    LocalStack::start(StackOptions {
        template: workspace_root().join("template.yaml"),
        stack_name: name.into(),
        users: USERS,
        seed: SEED,
        parameter_overrides: overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        poller_binary: poller,
        worker_binary: worker,
        poll_interval: Duration::from_millis(500),
        batching_window: None,
    })
    .await
    .unwrap_or_else(|e| panic!("the local stack did not start: {e}"))
}

/// `TRIPLINK_E2E_KEEP_LOGS=1` keeps the working directory (the functions' logs).
fn kept() -> bool {
    std::env::var_os(demo::lambda::stack::KEEP_LOGS).is_some()
}

/// Print the verdict; on a failing one also what explains it.
fn report(stack: &LocalStack, verdict: &Verdict) {
    println!("{}", verdict.line());
    if !verdict.clean() {
        for sample in &verdict.dead_letter_samples {
            println!("dead-letter message: {sample}");
        }
        for sample in &verdict.doubled_samples {
            println!("doubled request: {sample}");
        }
        println!("{}", stack.log_tails(4));
    }
}

fn assert_clean(verdict: &Verdict) {
    assert!(
        verdict.clean(),
        "requests were lost, doubled, stuck, dead-lettered or mismatched: {}",
        verdict.line()
    );
}

/// Scenario (a): the poller runs back to back (every 500 ms, reserved concurrency 1)
/// while the worker drains the stream, on the template's defaults.
#[ignore = "slow (release build, up to 90 s): run by make e2e"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clean_run_with_a_concurrent_poller() {
    let _serial = SERIAL.lock().await;
    let mut stack = stack("e2e-clean", &[]).await;
    let work_dir = stack.log_dir();
    stack.start_traffic().await.unwrap();
    let (drained, _) = stack
        .wait_until(LIMIT, |_, progress| progress.drained())
        .await
        .unwrap();
    stack.stop_traffic();
    let verdict = stack.verdict("clean", drained).await.unwrap();
    report(&stack, &verdict);
    let unlinked = unlink_a_connected_member(&stack).await;
    stack.shutdown().await;
    assert!(
        kept() || !work_dir.exists(),
        "the working directory is removed"
    );
    assert!(verdict.json["invocations"].as_u64() > Some(0));
    assert_clean(&verdict);
    unlinked.unwrap_or_else(|e| panic!("{e}"));
}

/// The supplier's unlink hook on the release worker: the "Member Unlinked" event as
/// EventBridge delivers it (the local stack emulates no rule: it is invoked directly),
/// twice. The first revokes and deletes the connection, the second finds none.
async fn unlink_a_connected_member(stack: &LocalStack) -> Result<(), String> {
    let dynamo = aws_sdk_dynamodb::Client::new(&stack.aws);
    let connected = dynamo
        .scan()
        .table_name(&stack.connections_table)
        .send()
        .await
        .map_err(|e| format!("scan: {e:?}"))?
        .items
        .unwrap_or_default()
        .into_iter()
        .filter_map(|item| item.get("member_id")?.as_s().ok().cloned())
        .find(|id| !id.contains('#'))
        .ok_or("the clean run connected nobody")?;
    let event = json!({
        "version": "0", "id": "0d6b3f2a-4c1e-4e8b-a7d5-93f2c1b8e640",
        "detail-type": "Member Unlinked", "source": "triplink.supplier",
        "account": "123456789012", "time": "2026-01-15T09:30:00Z", "region": "us-east-1",
        "resources": [], "detail": {"member_id": connected}
    });
    let mut results = Vec::new();
    for _ in 0..2 {
        match call(&stack.worker, event.clone()).await.outcome {
            Outcome::Success(body) => {
                let body: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
                results.push(body["result"].as_str().unwrap_or_default().to_owned());
            }
            other => return Err(format!("the unlink invocation failed: {other:?}")),
        }
    }
    let left = dynamo
        .get_item()
        .table_name(&stack.connections_table)
        .key(
            "member_id",
            aws_sdk_dynamodb::types::AttributeValue::S(connected),
        )
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| format!("get: {e:?}"))?
        .item;
    println!(
        "{}",
        json!({"scenario": "unlink", "results": results, "deleted": left.is_none()})
    );
    if results != ["revoked_at_concur", "not_connected"] || left.is_some() {
        return Err(format!(
            "unlink: {results:?}, entry left: {}",
            left.is_some()
        ));
    }
    Ok(())
}

/// A worker that has completed an invocation (warm, its app token cached: from then
/// on its only token calls are request-token exchanges).
async fn warm_worker(stack: &LocalStack) {
    let (warm, _) = stack
        .wait_until(Duration::from_secs(30), |s, _| {
            s.worker.stats().successes >= 1
        })
        .await
        .unwrap();
    assert!(warm, "no worker invocation succeeded within 30 s");
}

/// A run with `WorkerTimeoutSeconds=10` in which `chaos` strikes one worker invocation
/// (after `faults` are set at the sandbox); the verdict must show that it did
/// (`injected` and `effect` at least 1) and that nothing was lost, doubled, stuck or
/// dead-lettered.
async fn run_with_chaos(
    name: &str,
    scenario: &str,
    faults: &[&str],
    chaos: Chaos,
    (injected, effect): (&str, &str),
) {
    let _serial = SERIAL.lock().await;
    // One page per poller run (a run every 500 ms): the queue flows in over seconds, so
    // work is left when the chaos is armed, however fast the warm-up's invocations.
    let mut stack = stack(
        name,
        &[("WorkerTimeoutSeconds", "10"), ("PollMaxPages", "1")],
    )
    .await;
    let work_dir = stack.log_dir();
    let started = Instant::now();
    stack.start_traffic().await.unwrap();
    warm_worker(&stack).await;
    if !faults.is_empty() {
        stack.add_faults(faults).await.unwrap();
    }
    stack.worker.arm(chaos);
    let (drained, _) = stack
        .wait_until(LIMIT.saturating_sub(started.elapsed()), |s, progress| {
            progress.drained() && s.worker.armed() == 0
        })
        .await
        .unwrap();
    stack.stop_traffic();
    let verdict = stack.verdict(scenario, drained).await.unwrap();
    report(&stack, &verdict);
    stack.shutdown().await;
    assert!(
        kept() || !work_dir.exists(),
        "the working directory is removed"
    );
    assert!(
        verdict.json[injected].as_u64() >= Some(1) && verdict.json[effect].as_u64() >= Some(1),
        "the chaos did not strike ({injected}, {effect}): {}",
        verdict.line()
    );
    assert_clean(&verdict);
}

/// Scenario (b): the worker process is SIGKILLed 500 ms into an invocation that waits
/// on slowed-down token exchanges (1.5 s each, sandbox fault
/// `token:latency=1500:next=3`). Lambda's behaviour follows: the failed batch is
/// bisected and retried at once on a cold-started environment, under the template's
/// retry and dead-letter rules, while the poller keeps polling.
#[ignore = "slow (release build, up to 90 s): run by make e2e"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_invocation() {
    run_with_chaos(
        "e2e-crash",
        "worker_killed",
        &["token:latency=1500:next=3"],
        Chaos::Kill {
            after: Duration::from_millis(500),
        },
        ("kills_injected", "crashes"),
    )
    .await;
}

/// Scenario (b'): a worker invocation hangs 100 ms in (SIGSTOP) and overruns its
/// deadline: Lambda kills the environment and fails the batch, which is bisected and
/// retried on a cold start.
#[ignore = "slow (release build, up to 90 s): run by make e2e"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_timing_out() {
    run_with_chaos(
        "e2e-timeout",
        "worker_timed_out",
        &[],
        Chaos::Freeze {
            after: Duration::from_millis(100),
        },
        ("freezes_injected", "timeouts"),
    )
    .await;
}

fn fixture(
    log_dir: &Path,
    reserved: Option<u32>,
    extra: &[(&str, &str)],
) -> std::sync::Arc<LambdaFunction> {
    let mut environment: std::collections::BTreeMap<String, String> =
        [("FIXTURE_OWN".to_owned(), "own value".to_owned())].into();
    for (k, v) in extra {
        environment.insert(k.to_string(), v.to_string());
    }
    LambdaFunction::new(FunctionConfig {
        name: "fixture".into(),
        arn: "arn:aws:lambda:us-east-1:123456789012:function:fixture".into(),
        binary: PathBuf::from(env!("CARGO_BIN_EXE_lambda-fixture")),
        handler: "bootstrap".into(),
        timeout: Duration::from_secs(2),
        memory_mb: 256,
        environment,
        region: "us-east-1".into(),
        log_group: "/aws/lambda/fixture".into(),
        log_format: "JSON".into(),
        reserved_concurrency: reserved,
        log_dir: log_dir.to_path_buf(),
        init_timeout: INIT_TIMEOUT,
    })
}

async fn call(function: &LambdaFunction, event: Value) -> demo::lambda::process::Invocation {
    function.invoke(Bytes::from(event.to_string())).await
}

fn body(outcome: &Outcome) -> Value {
    match outcome {
        Outcome::Success(body) => serde_json::from_slice(body).unwrap(),
        other => panic!("not a success: {other:?}"),
    }
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim().to_owned()))
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

/// The harness itself, on a minimal function built on the same `lambda_runtime`:
/// the Runtime API contract, warm reuse, function errors, crashes, timeouts, injected
/// faults, reserved concurrency, failed initialisation, and cleanup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_emulator_runs_a_real_lambda_runtime_binary() {
    let dir = TempDir::new("triplink-e2e-fixture").unwrap();
    let f = fixture(dir.path(), Some(1), &[]);

    let first = call(&f, json!({"action": "echo", "n": 1})).await;
    assert!(first.cold_start);
    let answer = body(&first.outcome);
    assert_eq!(answer["request_id"], first.request_id.as_str());
    assert_eq!(
        answer["function_arn"],
        "arn:aws:lambda:us-east-1:123456789012:function:fixture"
    );
    assert_eq!(answer["function_name"], "fixture");
    assert_eq!(answer["memory"], "256");
    assert_eq!(answer["handler"], "bootstrap");
    assert_eq!(answer["own"], "own value");
    assert_eq!(answer["payload"]["n"], 1);
    assert!(answer["trace_id"].as_str().unwrap().starts_with("Root=1-"));
    let now_ms = chrono::Utc::now().timestamp_millis() as u64;
    let deadline = answer["deadline"].as_u64().unwrap();
    assert!(
        deadline > now_ms + 1000 && deadline <= now_ms + 2000,
        "deadline = now + timeout"
    );
    let pid = answer["pid"].as_u64().unwrap();

    let warm = call(&f, json!({"action": "echo"})).await;
    assert!(!warm.cold_start);
    assert_eq!(
        body(&warm.outcome)["pid"],
        pid,
        "the warm environment is reused"
    );

    let failed = call(&f, json!({"action": "error"})).await;
    match &failed.outcome {
        Outcome::FunctionError { error_message, .. } => {
            assert!(error_message.contains("asked to fail"), "{error_message}")
        }
        other => panic!("{other:?}"),
    }
    let after_error = call(&f, json!({"action": "echo"})).await;
    assert_eq!(
        body(&after_error.outcome)["pid"],
        pid,
        "a function error keeps the environment"
    );

    let crashed = call(&f, json!({"action": "exit"})).await;
    assert!(
        matches!(crashed.outcome, Outcome::Crashed { .. }),
        "{:?}",
        crashed.outcome
    );
    let after_crash = call(&f, json!({"action": "echo"})).await;
    assert!(after_crash.cold_start, "a crash costs a cold start");
    let pid = body(&after_crash.outcome)["pid"].as_u64().unwrap();

    let slow = call(&f, json!({"action": "echo", "ms": 5000})).await;
    assert_eq!(slow.outcome, Outcome::TimedOut);
    assert!(slow.duration >= Duration::from_millis(1500) && slow.duration < Duration::from_secs(4));
    assert!(!alive(pid), "the timed-out process was killed");

    f.arm(Chaos::Kill {
        after: Duration::from_millis(300),
    });
    let quick = call(&f, json!({"action": "echo"})).await;
    assert!(
        matches!(quick.outcome, Outcome::Success(_)),
        "too quick to be killed"
    );
    assert_eq!(
        f.armed(),
        1,
        "the fault waits for an invocation still running"
    );
    let killed = call(&f, json!({"action": "echo", "ms": 1000})).await;
    assert!(
        matches!(killed.outcome, Outcome::Crashed { .. }),
        "{:?}",
        killed.outcome
    );
    assert_eq!(
        killed.chaos,
        Some(Chaos::Kill {
            after: Duration::from_millis(300)
        })
    );

    f.arm(Chaos::Freeze {
        after: Duration::from_millis(100),
    });
    let frozen = call(&f, json!({"action": "echo", "ms": 300})).await;
    assert_eq!(frozen.outcome, Outcome::TimedOut);

    let (a, b) = tokio::join!(
        call(&f, json!({"action": "echo", "ms": 500})),
        call(&f, json!({"action": "echo", "ms": 500}))
    );
    let throttled = [&a, &b]
        .iter()
        .filter(|i| i.outcome == Outcome::Throttled)
        .count();
    assert_eq!(
        throttled, 1,
        "reserved concurrency 1: {:?} {:?}",
        a.outcome, b.outcome
    );

    let stats = f.stats();
    assert_eq!(stats.crashes, 2);
    assert_eq!(stats.timeouts, 2);
    assert_eq!(stats.function_errors, 1);
    assert_eq!(stats.throttles, 1);
    assert_eq!(stats.runtime_api_refusals, 0);

    let broken = fixture(dir.path(), None, &[("FIXTURE_INIT", "fail")]);
    let init = call(&broken, json!({})).await;
    assert!(
        matches!(init.outcome, Outcome::InitFailed { .. }),
        "{:?}",
        init.outcome
    );

    let last_pid = body(&call(&f, json!({"action": "echo"})).await.outcome)["pid"]
        .as_u64()
        .unwrap();
    drop(f);
    drop(broken);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !alive(last_pid),
        "dropping the function kills its processes"
    );
    let logs = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(logs >= 4, "one log file per environment");
    let path = dir.path().to_path_buf();
    drop(dir);
    assert!(!path.exists());
}
