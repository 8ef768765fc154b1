//! `make demo`: the connector's main job end to end on one machine.
//!
//! Starts a local DynamoDB (moto_server) and the Concur sandbox on free loopback ports,
//! creates the tables, seeds the sandbox (a few hundred users with the hard cases) and
//! the members table, then runs the poller and delivers the table's stream to the
//! worker the way Lambda does, until Concur's queue is drained. It then advances the
//! sandbox clock by a day to show requeued requests handled as new attempts, prints the
//! outcomes and a one-line JSON summary, and stops everything it started. Exit status 0
//! only if every request reached a final status with nothing lost or doubled.
//!
//! `--capture-logs FILE` keeps what the two functions would print in CloudWatch: the
//! JSON log lines (`init_logging`'s format, inside the Lambda runtime's invocation span)
//! and the EMF metric documents, as log events of the poller's and the worker's log
//! groups (see `demo::insights`); the sandbox's verdict goes next to it
//! (`FILE.verify.json`). The poller then runs as its function does (`Poller::run`: the
//! sweep, then the poll, both published).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use concur_sandbox::{spawn, Config};
use demo::insights::{log_group_name, LogCapture, DEMO_STACK};
use demo::stream::StreamDriver;
use lambda_runtime::tracing::{Instrument, Span};
use poller::{poll, ConcurPause, Poller, PollerSettings};
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::time::Instant;
use triplink_shared::concur::{BaseUrl, ConcurClient, ConcurConfig};
use triplink_shared::matching::Member;
use triplink_shared::members::dynamo::DynamoMemberDirectory;
use triplink_shared::members::MemberDirectory;
use triplink_shared::store::{lifecycle, tables, DynamoRequestStore};
use triplink_shared::telemetry::{init_logging_to, Metrics};
use triplink_shared::testing;
use triplink_shared::vault::{KmsEncryptor, TokenVault};
use worker::{Worker, WorkerSettings};

/// Run the TripLink connector end to end against a local DynamoDB and the Concur sandbox.
#[derive(Parser, Debug)]
#[command(name = "triplink-demo", version, about)]
struct Args {
    /// Concur users to seed, each with one pending connection request.
    #[arg(long, default_value_t = 300)]
    users: usize,
    /// Seed of the sandbox's generator (same seed, same users and cases).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Stream records per worker invocation (the template's batch size).
    #[arg(long, default_value_t = 10)]
    batch_size: usize,
    /// Poll/deliver rounds at most before giving up.
    #[arg(long, default_value_t = 20)]
    max_rounds: usize,
    /// A first deploy gone wrong: the members table is left empty (no import, no
    /// manifest). Succeeds only if no status at all reaches Concur and the worker says why.
    #[arg(long)]
    empty_directory: bool,
    /// Keep the functions' log lines and metric documents as CloudWatch log events in
    /// FILE (JSON lines), and the sandbox's verdict in FILE.verify.json.
    #[arg(long, value_name = "FILE")]
    capture_logs: Option<PathBuf>,
}

macro_rules! step {
    ($($arg:tt)*) => {{ println!("==> {}", format!($($arg)*)); }};
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::from(2)
        }
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The span the Lambda runtime opens around each invocation (its lines carry it).
fn invocation_span(id: &str) -> Span {
    let mut context = lambda_runtime::Context::default();
    context.request_id = id.to_owned();
    // `Tracing: Active`: Lambda passes an X-Ray trace header with every invocation.
    let now = chrono::Utc::now();
    context.xray_trace_id = Some(format!(
        "Root=1-{:08x}-{:024x};Parent={:016x};Sampled=1",
        now.timestamp(),
        now.timestamp_subsec_nanos(),
        id.len()
    ));
    lambda_runtime::layers::trace::request_span(&context)
}

async fn admin(client: &reqwest::Client, url: String, body: Option<Value>) -> Result<Value, Error> {
    let request = match body {
        Some(body) => client.post(url).json(&body),
        None => client.get(url),
    };
    Ok(request.send().await?.error_for_status()?.json().await?)
}

async fn run(args: Args) -> Result<bool, Error> {
    let started = std::time::Instant::now();
    let (poller_group, worker_group) = (
        log_group_name(DEMO_STACK, "poller"),
        log_group_name(DEMO_STACK, "worker"),
    );
    let capture = match &args.capture_logs {
        Some(path) => {
            let capture = LogCapture::create(path, &poller_group)?;
            // The sandbox shares this process; a deployed function has no such lines.
            init_logging_to(capture.sink().skipping_target("concur_sandbox"));
            Some(capture)
        }
        None => None,
    };
    let printed = |metrics: Metrics| match &capture {
        Some(capture) => metrics.printing_to(capture.sink()),
        None => metrics,
    };
    let to_group = |group: &str| {
        if let Some(capture) = &capture {
            capture.set_log_group(group);
        }
    };
    let work_dir = std::env::temp_dir().join(format!("triplink-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir)?;

    step!("starting a local DynamoDB (moto_server)");
    let moto = testing::moto();
    println!(
        "    DynamoDB, DynamoDB Streams and KMS at {}",
        moto.endpoint
    );

    step!(
        "starting the Concur sandbox with {} seeded users (seed {})",
        args.users,
        args.seed
    );
    let members_file = work_dir.join("members.json");
    let mut config = Config::for_tests();
    config.users = args.users;
    config.seed = Some(args.seed);
    config.members_out = Some(members_file.clone());
    let sandbox = spawn(config).await?;
    println!("    Concur sandbox at {}", sandbox.local_url);

    step!("creating the requests, members and connections tables");
    let aws = testing::sdk_config();
    let dynamo = aws_sdk_dynamodb::Client::new(&aws);
    let (requests, members_table, connections) = (
        "triplink-requests",
        "triplink-members",
        "triplink-connections",
    );
    for result in [
        tables::create_requests_table(&dynamo, requests).await,
        tables::create_members_table(&dynamo, members_table).await,
        tables::create_connections_table(&dynamo, connections).await,
    ] {
        result?;
    }

    let members: Vec<Member> = serde_json::from_str(&std::fs::read_to_string(&members_file)?)?;
    let directory = DynamoMemberDirectory::new(dynamo.clone(), members_table);
    if args.empty_directory {
        step!(
            "NOT importing the {} supplier members (--empty-directory)",
            members.len()
        );
    } else {
        step!("importing {} supplier members", members.len());
        for member in &members {
            directory.put_member(member).await?;
        }
        // What `triplink members import` writes last: the health gate's manifest.
        directory.refresh_manifest(chrono::Utc::now()).await?;
    }

    let concur = ConcurClient::new(ConcurConfig::new(
        BaseUrl::parse(&sandbox.local_url)?,
        "sandbox-client",
        SecretString::from("sandbox-secret"),
    ))?;
    let store = DynamoRequestStore::new(dynamo.clone(), requests);
    let key = testing::kms_key().await;
    let worker = Worker {
        concur: &concur,
        directory,
        store: &store,
        vault: TokenVault::new(
            dynamo.clone(),
            connections,
            KmsEncryptor::new(aws_sdk_kms::Client::new(&aws), key),
        ),
        settings: WorkerSettings::default(),
        metrics: printed(Metrics::tallied("worker")),
        safety: Default::default(),
    };
    let mut stream = StreamDriver::attach(
        &dynamo,
        aws_sdk_dynamodbstreams::Client::new(&aws),
        requests,
    )
    .await?;
    stream.batch_size = args.batch_size;
    let poller = Poller {
        concur: &concur,
        store: &store,
        settings: PollerSettings::default(),
        metrics: printed(Metrics::tallied("poller")),
        pause: ConcurPause::default(),
        keep_alive: None,
    };
    let mut invocation = 0u64;
    if args.empty_directory {
        let ok =
            empty_directory_run(&sandbox, &concur, &store, &worker, &mut stream, started).await;
        sandbox.shutdown().await?;
        std::fs::remove_dir_all(&work_dir).ok();
        return ok;
    }

    let mut dead_letters = Vec::new();
    let mut rounds = 0;
    let mut requeued_total = 0;
    for phase in ["first pass", "a day later"] {
        if phase == "a day later" {
            step!("advancing the sandbox clock by 24 h: CREU requests come back as new attempts");
            admin(
                &triplink_shared::testing::http_client(),
                sandbox.url("/_sandbox/clock/advance"),
                Some(json!({"seconds": 24 * 3600 + 60})),
            )
            .await?;
        }
        loop {
            rounds += 1;
            if rounds > args.max_rounds {
                return Err(format!("queue not drained after {} rounds", args.max_rounds).into());
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            // The poller function's run: sweep, then poll.
            to_group(&poller_group);
            invocation += 1;
            let before = poller.metrics.totals();
            let summary = poller
                .run(deadline)
                .instrument(invocation_span(&format!("demo-invocation-{invocation}")))
                .await?;
            let after = poller.metrics.totals();
            let delta = |name: &str| {
                after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
            };
            if delta("Rearmed") + delta("Parked") > 0.0 {
                println!(
                    "    [{phase}] sweep: {} re-armed, {} parked",
                    delta("Rearmed"),
                    delta("Parked")
                );
            }
            requeued_total += summary.requeued;
            println!(
                "    [{phase}] poller: {} pages, {} seen, {} new, {} requeued, {} already stored ({})",
                summary.pages, summary.seen, summary.new, summary.requeued,
                summary.token_refreshed + summary.unchanged, summary.stop_reason
            );
            to_group(&worker_group);
            let delivery = stream
                .deliver(|batch| {
                    invocation += 1;
                    let id = format!("demo-invocation-{invocation}");
                    let worker = &worker;
                    async move {
                        let deadline_ms = chrono::Utc::now().timestamp_millis() + 60_000;
                        let span = invocation_span(&id);
                        worker
                            .process_batch(&batch, &id, deadline_ms)
                            .instrument(span)
                            .await
                    }
                })
                .await?;
            println!(
                "    [{phase}] worker: {} stream records, {} for the worker, {} batches, {} retries, {} dead-lettered",
                delivery.read,
                delivery.read - delivery.filtered_out,
                delivery.batches,
                delivery.retries,
                delivery.dead_lettered.len()
            );
            dead_letters.extend(delivery.dead_lettered);
            if summary.seen == 0 && delivery.read == 0 {
                break;
            }
        }
    }

    step!("checking every request against the sandbox's expectations");
    let verify = admin(
        &triplink_shared::testing::http_client(),
        sandbox.url("/_sandbox/verify"),
        None,
    )
    .await?;
    if let Some(path) = &args.capture_logs {
        std::fs::write(path.with_extension("verify.json"), verify.to_string())?;
        // What the captured lines must not show (tests/log_privacy.rs looks for each).
        let mut secrets = sandbox.state.world().secrets();
        secrets
            .client_secrets
            .push(sandbox.state.settings.client_secret.clone());
        for member in &members {
            secrets.names.extend(member.first_name.clone());
            secrets.names.push(member.last_name.clone());
            secrets.emails.extend(member.emails.iter().cloned());
            secrets
                .loyalty_numbers
                .extend(member.loyalty_number.clone());
        }
        std::fs::write(
            path.with_extension("secrets.json"),
            serde_json::to_string(&secrets)?,
        )?;
    }
    let results = verify["requests"].as_array().cloned().unwrap_or_default();
    let mut accepted: BTreeMap<String, usize> = BTreeMap::new();
    for status in results
        .iter()
        .flat_map(|r| r["reported"].as_array().cloned().unwrap_or_default())
    {
        *accepted
            .entry(status.as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    let mut by_case: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for r in &results {
        let case = r["case"].as_str().unwrap_or("?").to_owned();
        let expected = r["expected"].as_str().unwrap_or("?").to_owned();
        let first = r["reported"][0].as_str().unwrap_or("none").to_owned();
        let entry = by_case.entry((case, expected)).or_default();
        entry.0 += 1;
        if r["outcome"] == "matched" {
            entry.1 += 1;
        }
        *outcomes.entry(first).or_default() += 1;
    }
    println!();
    println!(
        "    {:<28} {:<8} {:>6} {:>8}",
        "case", "expected", "count", "as such"
    );
    for ((case, expected), (count, ok)) in &by_case {
        println!("    {case:<28} {expected:<8} {count:>6} {ok:>8}");
    }
    println!();
    let lost = verify["unreported"].as_u64().unwrap_or(u64::MAX) as usize + dead_letters.len();
    let doubled = verify["duplicates"].as_u64().unwrap_or(u64::MAX) as usize;
    let mismatched = verify["mismatched"].as_u64().unwrap_or(u64::MAX);
    let ok = verify["ok"] == true && lost == 0 && doubled == 0 && requeued_total > 0;
    let mut summary = json!({
        "requests": results.len(),
        "requeued_attempts": requeued_total,
        "mismatched": mismatched,
        "lost": lost,
        "doubled": doubled,
        "statuses_accepted": accepted,
        "ok": ok,
        "seconds": started.elapsed().as_secs_f64(),
    });
    for (status, count) in outcomes {
        summary[status] = json!(count);
    }
    println!("{summary}");
    sandbox.shutdown().await?;
    std::fs::remove_dir_all(&work_dir).ok();
    Ok(ok)
}

/// `--empty-directory`: two poll-and-deliver rounds with nothing imported. Every request
/// would be `CREU1` ("not found"); the health gate must hold them all back.
async fn empty_directory_run<C, V>(
    sandbox: &concur_sandbox::Sandbox,
    concur: &ConcurClient,
    store: &DynamoRequestStore,
    worker: &Worker<C, DynamoMemberDirectory, &DynamoRequestStore, V>,
    stream: &mut StreamDriver,
    started: std::time::Instant,
) -> Result<bool, Error>
where
    C: worker::ConcurPort,
    V: worker::ConnectionSink,
{
    let mut invocation = 0u64;
    for round in 1..=2 {
        let deadline = Instant::now() + Duration::from_secs(60);
        let sweep = lifecycle::sweep(store, chrono::Utc::now() + chrono::Duration::hours(1)).await;
        let summary = poll(concur, store, &PollerSettings::default(), deadline).await?;
        let delivery = stream
            .deliver(|batch| {
                invocation += 1;
                let id = format!("demo-invocation-{invocation}");
                async move {
                    let deadline_ms = chrono::Utc::now().timestamp_millis() + 60_000;
                    worker.process_batch(&batch, &id, deadline_ms).await
                }
            })
            .await?;
        println!(
            "    [round {round}] sweep re-armed {}, poller saw {} ({} new), worker got {} records",
            sweep.rearmed,
            summary.seen,
            summary.new,
            delivery.read - delivery.filtered_out
        );
    }
    let verify = admin(
        &triplink_shared::testing::http_client(),
        sandbox.url("/_sandbox/verify"),
        None,
    )
    .await?;
    let results = verify["requests"].as_array().cloned().unwrap_or_default();
    let sent: usize = results
        .iter()
        .map(|r| r["reported"].as_array().map_or(0, Vec::len))
        .sum();
    let health = worker.directory.health().await;
    let readiness = triplink_shared::members::health::readiness(&health);
    let reason = match &readiness {
        triplink_shared::members::Readiness::NotReady(why) => {
            println!(
                "    member directory: NOT READY ({}): {}",
                why.as_str(),
                why.advice()
            );
            why.as_str()
        }
        triplink_shared::members::Readiness::Ready { .. } => "ready",
    };
    let totals = worker.metrics.totals();
    let not_ready = totals.get("DirectoryNotReady").copied().unwrap_or(0.0);
    let pending = triplink_shared::testing::scan_requests(store)
        .await
        .iter()
        .filter(|i| i.state != triplink_shared::store::layout::RequestState::Reported)
        .count();
    let ok = sent == 0 && not_ready > 0.0 && pending == results.len() && !readiness.is_ready();
    println!(
        "{}",
        json!({
            "scenario": "empty_directory",
            "requests": results.len(),
            "statuses_sent": sent,
            "left_pending": pending,
            "directory": reason,
            "DirectoryNotReady": not_ready,
            "ok": ok,
            "seconds": started.elapsed().as_secs_f64(),
        })
    );
    Ok(ok)
}
