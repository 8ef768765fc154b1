//! `make bench`: the figures of issue 14, measured on the release binaries Lambda would
//! run, on loopback (moto_server from `.venv`, the Concur sandbox in process), printed as
//! one table and written to `bench/results.md` and `bench/results.json`.
//!
//! * init: process start to the first Runtime API `next`, poller and worker against a
//!   bare `lambda_runtime` echo (`bench/echo`) built in the same `cargo build --release`;
//!   median of `INIT_RUNS` (31) interleaved runs.
//! * size: the arm64 `bootstrap` of each function as `sam build` left it in
//!   `.aws-sam/build` (`make bench` runs `make build` first), and its `zip -9`.
//! * first invocation after init (connections and the Concur app token set up inside it)
//!   and a warm one, each the handler's time (`next` answered to the answer).
//! * poll drain: `DRAIN` pending requests, `LATENCY_MS` per Concur call, into moto:
//!   wall / (pages x latency).
//! * worker batch: `BATCH` requests in one stream batch, `LATENCY_MS` per Concur call:
//!   wall / ideal at the configured concurrency.
//! * peak RSS (`VmHWM`) of the worker after a batch of `BIG_BATCH`, of the poller after
//!   the drain.
//!
//! Nothing here asserts a timing; goals are reported as met or not.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use demo::lambda::cargo::{build_release, workspace_root};
use demo::lambda::process::{Invocation, LambdaFunction, Outcome};
use demo::lambda::stack::{LocalStack, StackOptions};
use serde_json::{json, Value};
use triplink_shared::fault_proxy::FaultProxy;
use triplink_shared::testing;

const INIT_RUNS: usize = 31;
const LATENCY_MS: u64 = 20;
const DRAIN: usize = 10_000;
const PAGE: usize = 10;
const BATCH: usize = 100;
const BIG_BATCH: usize = 1_000;
const FIRST_RUNS: usize = 5;
const SEED: u64 = 14;
const FIRST_USERS: usize = 6;
/// The AWS operations counted per request (the proxy names them by `X-Amz-Target`).
const AWS_OPS: [&str; 12] = [
    "GetItem",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "Query",
    "Scan",
    "BatchWriteItem",
    "BatchGetItem",
    "TransactWriteItems",
    "Encrypt",
    "Decrypt",
    "GetSecretValue",
];

const INIT_GOAL: f64 = 1.5;
const ZIP_GOAL_MB: f64 = 3.0;
const DRAIN_GOAL: f64 = 1.1;
const BATCH_GOAL: f64 = 1.2;
const RSS_GOAL_MB: f64 = 30.0;

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Process start to the first `next` request on a one-shot Runtime API stub.
fn time_to_next(binary: &Path, env: &[(String, String)]) -> Result<Duration, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let env = env.iter().map(|(k, v)| {
        if k == "AWS_LAMBDA_RUNTIME_API" {
            (k.clone(), addr.to_string())
        } else {
            (k.clone(), v.clone())
        }
    });
    let started = Instant::now();
    let mut child = Command::new(binary)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    let result = (|| {
        let (mut stream, _) = listener.accept().map_err(|e| e.to_string())?;
        let mut seen = Vec::new();
        let mut buffer = [0u8; 1024];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buffer).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the runtime closed the connection".to_owned());
            }
            seen.extend_from_slice(&buffer[..n]);
        }
        let elapsed = started.elapsed();
        if !String::from_utf8_lossy(&seen).contains("/runtime/invocation/next") {
            return Err(format!(
                "the first call was not next: {}",
                String::from_utf8_lossy(&seen)
            ));
        }
        Ok(elapsed)
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn zip_size(file: &Path) -> Option<u64> {
    let dir = tempdir()?;
    let zip = dir.join("f.zip");
    let status = Command::new("zip")
        .arg("-9")
        .arg("-j")
        .arg("-q")
        .arg(&zip)
        .arg(file)
        .status()
        .ok()?;
    let size = status
        .success()
        .then(|| std::fs::metadata(&zip).ok().map(|m| m.len()))
        .flatten();
    let _ = std::fs::remove_dir_all(&dir);
    size
}

fn tempdir() -> Option<PathBuf> {
    let dir = std::env::temp_dir().join(format!("triplink-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir)
}

fn text(command: &str, args: &[&str]) -> String {
    Command::new(command)
        .args(args)
        .current_dir(workspace_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned())
}

async fn stack(name: &str, users: usize, overrides: &[(&str, &str)], bins: &Bins) -> LocalStack {
    LocalStack::start(StackOptions {
        template: workspace_root().join("template.yaml"),
        stack_name: name.into(),
        users,
        seed: SEED,
        parameter_overrides: overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        poller_binary: bins.poller.clone(),
        worker_binary: bins.worker.clone(),
        // The benchmark invokes the poller itself; the schedule stays quiet.
        poll_interval: Duration::from_secs(3600),
        batching_window: Some(Duration::from_secs(2)),
    })
    .await
    .unwrap_or_else(|e| panic!("the local stack did not start: {e}"))
}

async fn invoke(function: &LambdaFunction, event: &Value) -> Invocation {
    let invocation = function.invoke(Bytes::from(event.to_string())).await;
    if !matches!(invocation.outcome, Outcome::Success(_)) {
        panic!("invocation failed: {:?}", invocation.outcome);
    }
    invocation
}

async fn admin(base: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut request =
        triplink_shared::testing::http_client().request(method, format!("{base}{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request
        .send()
        .await
        .unwrap_or_else(|e| panic!("sandbox {path}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("sandbox {path}: {e}"))
}

async fn set_faults(base: &str, rules: &[String]) {
    admin(
        base,
        reqwest::Method::POST,
        "/_sandbox/faults",
        Some(json!({ "rules": rules, "replace": true })),
    )
    .await;
}

async fn fault_hits(base: &str) -> u64 {
    admin(base, reqwest::Method::GET, "/_sandbox/faults", None).await["rules"]
        .as_array()
        .map(|rules| rules.iter().filter_map(|r| r["hits"].as_u64()).sum())
        .unwrap_or(0)
}

/// Invoke the poller until a run reads Concur's queue to its end (the poller never pops:
/// the queue stays until the worker reports); the invocations.
async fn drain(poller: &LambdaFunction, event: &Value) -> Vec<Invocation> {
    let mut runs = Vec::new();
    loop {
        let invocation = invoke(poller, event).await;
        let stop = match &invocation.outcome {
            Outcome::Success(body) => serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v["stop_reason"].as_str().map(str::to_owned))
                .unwrap_or_default(),
            _ => String::new(),
        };
        runs.push(invocation);
        // Each run reads from offset 0 again: more runs would only re-read the same pages.
        if stop != "page_cap" || runs.len() >= 3 {
            return runs;
        }
    }
}

/// Run the stream mapping until Concur's queue is empty (every request reported) and
/// no batch is in flight. Progress is read from the sandbox, not by scanning the table,
/// so the measurement does not load moto.
async fn work(stack: &mut LocalStack) -> Vec<Invocation> {
    stack.start_traffic().await.unwrap();
    let until = Instant::now() + Duration::from_secs(900);
    loop {
        let summary = admin(
            &stack.sandbox.local_url,
            reqwest::Method::GET,
            "/_sandbox/summary",
            None,
        )
        .await;
        let queued =
            summary["pending"].as_u64().unwrap_or(0) + summary["in_flight"].as_u64().unwrap_or(0);
        let stats = stack.mapping_stats();
        if queued == 0 && !stats.in_flight && stats.pending == 0 {
            break;
        }
        if Instant::now() > until {
            eprintln!("warning: not drained: {queued} queued at Concur, {stats:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack.stop_traffic();
    stack.worker.history()
}

struct Bins {
    poller: PathBuf,
    worker: PathBuf,
    echo: PathBuf,
    echo_current_thread: PathBuf,
}

#[derive(Default)]
struct Results {
    rows: Vec<(String, String, String, String)>,
    json: BTreeMap<String, Value>,
}

impl Results {
    fn row(&mut self, figure: &str, value: String, goal: &str, met: Option<bool>) {
        let verdict = match met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "",
        };
        println!("{figure:<58} {value:>26}  {goal:<10} {verdict}");
        self.rows
            .push((figure.into(), value, goal.into(), verdict.into()));
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let root = workspace_root();
    println!(
        "building the release binaries (cargo build --release -p poller -p worker -p lambda-echo)"
    );
    let built = tokio::task::spawn_blocking({
        let root = root.clone();
        move || build_release(&root, &["poller", "worker", "lambda-echo"])
    })
    .await
    .expect("build task")
    .unwrap_or_else(|e| panic!("{e}"));
    let path = |name: &str| {
        built
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("the build produced no {name}: {built:?}"))
    };
    let bins = Bins {
        poller: path("poller"),
        worker: path("worker"),
        echo: path("lambda-echo"),
        echo_current_thread: path("lambda-echo-current-thread"),
    };
    let mut results = Results::default();
    println!();
    println!("{:<58} {:>26}  {:<10} verdict", "figure", "value", "goal");

    // ----- init ---------------------------------------------------------------------
    let small = stack("bench-init", 4, &[], &bins).await;
    let poller_env = small
        .poller
        .config()
        .process_environment("127.0.0.1:9", "bench/init");
    let worker_env = small
        .worker
        .config()
        .process_environment("127.0.0.1:9", "bench/init");
    let echo_env: Vec<(String, String)> = poller_env
        .iter()
        .filter(|(k, _)| k.starts_with("AWS_") || k == "PATH" || k == "TZ" || k == "LANG")
        .cloned()
        .collect();
    let (mut echo, mut poller, mut worker) = (Vec::new(), Vec::new(), Vec::new());
    let mut echo_ct = Vec::new();
    for _ in 0..INIT_RUNS {
        for (binary, env, into) in [
            (&bins.echo, &echo_env, &mut echo),
            (&bins.echo_current_thread, &echo_env, &mut echo_ct),
            (&bins.poller, &poller_env, &mut poller),
            (&bins.worker, &worker_env, &mut worker),
        ] {
            let took = time_to_next(binary, env).unwrap_or_else(|e| panic!("init: {e}"));
            into.push(ms(took));
        }
    }
    let (echo, poller, worker) = (median(echo), median(poller), median(worker));
    let echo_ct = median(echo_ct);
    results.json.insert(
        "init_ms".into(),
        json!({ "runs": INIT_RUNS, "echo": echo, "echo_current_thread": echo_ct,
                 "poller": poller, "worker": worker,
                 "poller_ratio": poller / echo, "worker_ratio": worker / echo,
                 "poller_ratio_current_thread": poller / echo_ct,
                 "worker_ratio_current_thread": worker / echo_ct }),
    );
    results.row(
        "init, bare lambda_runtime echo, #[tokio::main] (median ms)",
        format!("{echo:.2} ms"),
        "",
        None,
    );
    results.row(
        "init, the same echo on a current-thread runtime (median ms)",
        format!("{echo_ct:.2} ms"),
        "",
        None,
    );
    // The goal's baseline is the bare runtime as its examples write it (`#[tokio::main]`);
    // the functions run on a current-thread runtime, so the like-for-like ratio is shown
    // beside it (and judged too).
    for (name, value) in [("poller", poller), ("worker", worker)] {
        let ratio = value / echo;
        results.row(
            &format!("init, {name} (median ms; ratio to echo)"),
            format!("{value:.2} ms; {ratio:.2}x"),
            "<= 1.5x",
            Some(ratio <= INIT_GOAL),
        );
        let like = value / echo_ct;
        results.row(
            &format!("init, {name}: ratio to the current-thread echo"),
            format!("{like:.2}x"),
            "<= 1.5x",
            Some(like <= INIT_GOAL),
        );
    }

    // ----- size -----------------------------------------------------------------------
    let mut sizes = BTreeMap::new();
    for (name, logical, native) in [
        ("poller", "PollerFunction", &bins.poller),
        ("worker", "WorkerFunction", &bins.worker),
    ] {
        let native_size = std::fs::metadata(native).map(|m| m.len()).unwrap_or(0);
        let bootstrap = root.join(".aws-sam/build").join(logical).join("bootstrap");
        match std::fs::metadata(&bootstrap) {
            Ok(meta) => {
                let zip = zip_size(&bootstrap).unwrap_or(0);
                results.row(
                    &format!("size, {name} arm64 bootstrap / zip -9 (MB)"),
                    format!("{:.2} / {:.2} MB", mb(meta.len()), mb(zip)),
                    "<= 3.0 MB",
                    Some(mb(zip) <= ZIP_GOAL_MB),
                );
                sizes.insert(
                    name.to_owned(),
                    json!({ "arm64_bootstrap_bytes": meta.len(), "arm64_zip_bytes": zip,
                             "x86_64_release_bytes": native_size }),
                );
            }
            Err(_) => {
                results.row(
                    &format!("size, {name} arm64 (no .aws-sam build: run make build)"),
                    "-".into(),
                    "<= 3.0 MB",
                    None,
                );
                sizes.insert(
                    name.to_owned(),
                    json!({ "x86_64_release_bytes": native_size }),
                );
            }
        }
        results.row(
            &format!("size, {name} x86_64 release binary (MB)"),
            format!("{:.2} MB", mb(native_size)),
            "",
            None,
        );
    }
    results.json.insert("size".into(), json!(sizes));

    // ----- first and warm invocations -------------------------------------------------
    let event = small.schedule_event();
    let (mut first, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..FIRST_RUNS {
        small.poller.recycle();
        let cold = invoke(&small.poller, &event).await;
        let again = invoke(&small.poller, &event).await;
        first.extend(cold.handler.map(ms));
        warm.extend(again.handler.map(ms));
    }
    let (poller_first, poller_warm) = (median(first), median(warm));
    results.row(
        "poller, first invocation after init (empty queue, ms)",
        format!("{poller_first:.2} ms"),
        "",
        None,
    );
    results.row(
        "poller, warm invocation (empty queue, ms)",
        format!("{poller_warm:.2} ms"),
        "",
        None,
    );
    let poller_config = small.poller.config().clone();
    drop(small);

    // The worker, one record per invocation: the first after init, then warm ones. The
    // functions reach moto through a counting proxy: AWS calls per request.
    let proxy = FaultProxy::start(&testing::moto().endpoint);
    let mut single = stack(
        "bench-first",
        FIRST_USERS,
        &[
            ("WorkerBatchSize", "1"),
            ("LocalAwsEndpointUrl", proxy.endpoint()),
        ],
        &bins,
    )
    .await;
    drain(&single.poller, &single.schedule_event()).await;
    let poller_calls: BTreeMap<&str, u64> =
        AWS_OPS.iter().map(|op| (*op, proxy.calls(op))).collect();
    // From here the proxy counts the worker's calls alone: the poller, which runs on its
    // schedule beside the worker (sweeps, requeues of refused requests), goes to moto
    // directly.
    let mut direct = single.poller.config().clone();
    direct
        .environment
        .insert("AWS_ENDPOINT_URL".into(), testing::moto().endpoint.clone());
    single.poller = LambdaFunction::new(direct);
    let history = work(&mut single).await;
    let mut calls_per_request = BTreeMap::new();
    for op in AWS_OPS {
        let poller = poller_calls[op];
        let worker = proxy.calls(op) - poller;
        if poller + worker > 0 {
            let per = |n: u64| n as f64 / FIRST_USERS as f64;
            calls_per_request.insert(
                op.to_string(),
                json!({ "poller": per(poller), "worker": per(worker) }),
            );
            results.row(
                &format!("AWS calls per request: {op} (poller; worker)"),
                format!("{:.2}; {:.2}", per(poller), per(worker)),
                "",
                None,
            );
        }
    }
    results
        .json
        .insert("aws_calls_per_request".into(), json!(calls_per_request));
    drop(proxy);
    let worker_first = median(
        history
            .iter()
            .filter(|i| i.cold_start)
            .filter_map(|i| i.handler.map(ms))
            .collect(),
    );
    let worker_warm = median(
        history
            .iter()
            .filter(|i| !i.cold_start)
            .filter_map(|i| i.handler.map(ms))
            .collect(),
    );
    drop(single);
    results.row(
        "worker, first invocation after init (1 record, ms)",
        format!("{worker_first:.2} ms"),
        "",
        None,
    );
    results.row(
        "worker, warm invocation (1 record, median ms)",
        format!("{worker_warm:.2} ms"),
        "",
        None,
    );
    results.json.insert(
        "invocation_ms".into(),
        json!({ "poller_first": poller_first, "poller_warm": poller_warm,
                 "worker_first": worker_first, "worker_warm": worker_warm }),
    );

    // ----- worker batch -----------------------------------------------------------------
    // Through the proxy, which times moto's busy periods: moto serves one request at a
    // time, so the time it spends on the worker's calls bounds the batch from below.
    let proxy = FaultProxy::start(&testing::moto().endpoint);
    let mut batch = stack(
        "bench-batch",
        BATCH,
        &[
            ("WorkerBatchSize", &BATCH.to_string()),
            ("LocalAwsEndpointUrl", proxy.endpoint()),
        ],
        &bins,
    )
    .await;
    drain(&batch.poller, &batch.schedule_event()).await;
    let concurrency: usize = batch
        .worker
        .config()
        .environment
        .get("WORKER_CONCURRENCY")
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    set_faults(
        &batch.sandbox.local_url,
        &["token", "get", "put"]
            .iter()
            .map(|route| format!("{route}:latency={LATENCY_MS}"))
            .collect::<Vec<_>>(),
    )
    .await;
    let busy_before = proxy.upstream_busy();
    let history = work(&mut batch).await;
    let moto_busy = ms(proxy.upstream_busy() - busy_before);
    let calls = fault_hits(&batch.sandbox.local_url).await;
    drop(batch);
    drop(proxy);
    let wall: f64 = history.iter().filter_map(|i| i.handler.map(ms)).sum();
    let per_request = calls as f64 / BATCH as f64;
    let ideal = (BATCH as f64 / concurrency as f64).ceil() * per_request * LATENCY_MS as f64;
    let ratio = wall / ideal;
    // The same batch bounded by the local moto: the time it was busy with the worker's
    // calls (it serves them one after another).
    let aws_per_request: f64 = calls_per_request
        .values()
        .filter_map(|v| v["worker"].as_f64())
        .sum();
    let bounded_ratio = wall / ideal.max(moto_busy);
    results.row(
        &format!(
            "worker batch: {BATCH} requests, {} invocation(s), concurrency {concurrency}",
            history.len()
        ),
        format!("{wall:.0} ms; ideal {ideal:.0} ms"),
        "",
        None,
    );
    results.row(
        &format!("worker batch: wall / ideal ({per_request:.1} Concur calls per request)"),
        format!("{ratio:.2}"),
        "<= 1.2",
        Some(ratio <= BATCH_GOAL),
    );
    results.row(
        &format!(
            "worker batch: wall / max(ideal, moto busy {moto_busy:.0} ms with its {aws_per_request:.1} AWS calls per request)"
        ),
        format!("{bounded_ratio:.2}"),
        "",
        None,
    );
    results.json.insert(
        "worker_batch".into(),
        json!({ "requests": BATCH, "invocations": history.len(), "concurrency": concurrency,
                 "concur_calls": calls, "latency_ms": LATENCY_MS, "wall_ms": wall,
                 "ideal_ms": ideal, "ratio": ratio, "moto_busy_ms": moto_busy,
                 "aws_calls_per_request": aws_per_request,
                 "ratio_to_moto_bound": bounded_ratio }),
    );

    // ----- worker peak RSS on a big batch -------------------------------------------------
    let mut big = stack(
        "bench-rss",
        BIG_BATCH,
        &[
            ("WorkerBatchSize", &BIG_BATCH.to_string()),
            ("WorkerTimeoutSeconds", "900"),
            // One poller run reads the whole queue (each run starts again at offset 0).
            ("PollMaxPages", "1000"),
            ("PollerTimeoutSeconds", "900"),
        ],
        &bins,
    )
    .await;
    drain(&big.poller, &big.schedule_event()).await;
    let history = work(&mut big).await;
    drop(big);
    let worker_rss = history
        .iter()
        .filter_map(|i| i.peak_rss_kib)
        .max()
        .unwrap_or(0) as f64
        / 1024.0;
    results.row(
        &format!(
            "worker peak RSS, {BIG_BATCH} requests in {} invocation(s) (MiB)",
            history.len()
        ),
        format!("{worker_rss:.1} MiB"),
        "<= 30 MB",
        Some(worker_rss * 1.048_576 <= RSS_GOAL_MB),
    );

    // ----- poll drain -------------------------------------------------------------------
    // Its own sandbox and table, no member import (the poller needs none): the small
    // stack's poller configuration pointed at them, one run for the whole queue.
    let mut sandbox_config = concur_sandbox::Config::for_tests();
    sandbox_config.users = DRAIN;
    sandbox_config.seed = Some(SEED);
    let credentials = (
        sandbox_config.client_id.clone(),
        sandbox_config.client_secret.clone(),
    );
    let sandbox = concur_sandbox::spawn(sandbox_config)
        .await
        .unwrap_or_else(|e| panic!("sandbox: {e}"));
    let table = testing::unique_name("bench-drain");
    triplink_shared::store::tables::create_requests_table(&testing::dynamodb(), &table)
        .await
        .unwrap_or_else(|e| panic!("requests table: {e}"));
    let mut config = poller_config.clone();
    config.timeout = Duration::from_secs(900);
    for key in [
        "CONCUR_API_BASE_URL",
        "CONCUR_AUTH_BASE_URL",
        "CONCUR_AUTHTOKEN_BASE_URL",
    ] {
        config
            .environment
            .insert(key.into(), sandbox.local_url.clone());
    }
    config.environment.insert("REQUESTS_TABLE".into(), table);
    config
        .environment
        .insert("POLL_MAX_PAGES".into(), (DRAIN / PAGE).to_string());
    // moto's busy time with the poller's writes, through the proxy as for the batch.
    let proxy = FaultProxy::start(&testing::moto().endpoint);
    config
        .environment
        .insert("AWS_ENDPOINT_URL".into(), proxy.endpoint().to_owned());
    config.log_dir = tempdir().unwrap_or_else(std::env::temp_dir);
    let drain_poller = LambdaFunction::new(config);
    set_faults(&sandbox.local_url, &[format!("list:latency={LATENCY_MS}")]).await;
    let started = Instant::now();
    let runs = drain(&drain_poller, &event).await;
    let drain_wall = ms(started.elapsed());
    let drain_moto_busy = ms(proxy.upstream_busy());
    let drain_writes = proxy.calls("PutItem");
    drop(proxy);
    let lists = fault_hits(&sandbox.local_url).await;
    // Reading alone: the same pages (the poller popped nothing) read one after another by
    // the same Concur client, with the same 20 ms, and no writes. What a list call costs
    // beyond the injected latency (the sandbox's own work, loopback, parsing) is in it.
    let reader =
        triplink_shared::concur::ConcurClient::new(triplink_shared::concur::ConcurConfig::new(
            triplink_shared::concur::BaseUrl::parse(&sandbox.local_url)
                .unwrap_or_else(|e| panic!("sandbox URL: {e}")),
            credentials.0,
            secrecy::SecretString::from(credentials.1),
        ))
        .unwrap_or_else(|e| panic!("Concur client: {e}"));
    let read_started = Instant::now();
    let (mut read_pages, mut offset) = (0u64, None::<String>);
    while read_pages < 2 * lists.max(1) {
        let page = reader
            .list_page(
                PAGE as u32,
                offset.as_deref(),
                tokio::time::Instant::now() + Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|e| panic!("list: {e}"));
        read_pages += 1;
        match page.next_offset {
            Some(next) => offset = Some(next),
            None => break,
        }
    }
    let reading_alone = ms(read_started.elapsed());
    let poller_rss = runs
        .iter()
        .filter_map(|i| i.peak_rss_kib)
        .max()
        .unwrap_or(0) as f64
        / 1024.0;
    drop(drain_poller);
    drop(sandbox);
    let handler: f64 = runs.iter().filter_map(|i| i.handler.map(ms)).sum();
    let pages = DRAIN.div_ceil(PAGE) as f64;
    let ratio = handler / (pages * LATENCY_MS as f64);
    let per_page = handler / pages;
    let drain_bounded = handler / (pages * LATENCY_MS as f64).max(drain_moto_busy);
    let to_reading = handler / reading_alone;
    results.row(
        &format!(
            "poll drain: {DRAIN} requests, {} run(s), {lists} list calls",
            runs.len()
        ),
        format!("{handler:.0} ms (wall {drain_wall:.0})"),
        "",
        None,
    );
    results.row(
        "poll drain: handler / (pages x 20 ms)",
        format!("{ratio:.2}"),
        "<= 1.1",
        Some(ratio <= DRAIN_GOAL),
    );
    results.row(
        &format!(
            "poll drain: handler / max(ideal, moto busy {drain_moto_busy:.0} ms with {drain_writes} PutItem)"
        ),
        format!("{drain_bounded:.2}"),
        "",
        None,
    );
    results.row(
        &format!(
            "poll drain: the same {read_pages} pages read alone, no writes (ms; / (pages x 20 ms))"
        ),
        format!(
            "{reading_alone:.0} ms; {:.2}",
            reading_alone / (read_pages as f64 * LATENCY_MS as f64)
        ),
        "",
        None,
    );
    results.row(
        "poll drain: handler / reading alone",
        format!("{to_reading:.2}"),
        "",
        None,
    );
    results.row(
        &format!("poller peak RSS, {DRAIN} drain (MiB)"),
        format!("{poller_rss:.1} MiB"),
        "<= 30 MB",
        Some(poller_rss * 1.048_576 <= RSS_GOAL_MB),
    );
    for backlog in [100_000u64, 1_000_000] {
        let seconds = backlog as f64 / PAGE as f64 * per_page / 1000.0;
        results.row(
            &format!("drain of {backlog} at this rate ({per_page:.1} ms per page)"),
            format!("{:.0} s ({:.1} h)", seconds, seconds / 3600.0),
            "",
            None,
        );
    }
    results.json.insert(
        "poll_drain".into(),
        json!({ "requests": DRAIN, "page": PAGE, "runs": runs.len(), "list_calls": lists,
                 "latency_ms": LATENCY_MS, "handler_ms": handler, "wall_ms": drain_wall,
                 "ratio": ratio, "ms_per_page": per_page, "moto_busy_ms": drain_moto_busy,
                 "ratio_to_moto_bound": drain_bounded, "reading_alone_ms": reading_alone,
                 "reading_alone_pages": read_pages, "ratio_to_reading_alone": to_reading }),
    );
    results.json.insert(
        "peak_rss_mib".into(),
        json!({ "worker_batch_1000": worker_rss, "poller_drain_10000": poller_rss }),
    );

    write(&root, &results);
}

fn write(root: &Path, results: &Results) {
    let commit = text("git", &["rev-parse", "--short=12", "HEAD"]);
    let dirty = !text("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    let commit = if dirty {
        format!("{commit} (with local changes)")
    } else {
        commit
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let cpu = cpu_model();
    let mut json = results.json.clone();
    json.insert(
        "machine".into(),
        json!({ "cpu": cpu, "cores": cores, "date": date, "commit": commit,
                 "arch": std::env::consts::ARCH }),
    );
    let mut md = String::new();
    md.push_str("# Benchmark results\n\n");
    md.push_str("Written by `make bench` (demo/benches/lambda.rs); do not edit by hand.\n\n");
    md.push_str(&format!(
        "- date: {date}\n- commit: {commit}\n- CPU: {cpu}, {cores} cores ({})\n- loopback only: moto_server, the Concur sandbox in process, {LATENCY_MS} ms injected per Concur call where stated\n\n",
        std::env::consts::ARCH
    ));
    md.push_str("| figure | value | goal | verdict |\n| --- | --- | --- | --- |\n");
    for (figure, value, goal, verdict) in &results.rows {
        md.push_str(&format!("| {figure} | {value} | {goal} | {verdict} |\n"));
    }
    let dir = root.join("bench");
    let _ = std::fs::create_dir_all(&dir);
    let json_text = serde_json::to_string_pretty(&Value::Object(json.into_iter().collect()))
        .unwrap_or_default();
    for (name, content) in [("results.md", md), ("results.json", json_text + "\n")] {
        let path = dir.join(name);
        match std::fs::write(&path, content) {
            Ok(()) => println!("wrote {}", path.display()),
            Err(e) => eprintln!("cannot write {}: {e}", path.display()),
        }
    }
}
