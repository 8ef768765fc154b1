//! The whole stack on one machine, as `template.yaml` deploys it: moto for DynamoDB
//! (the three tables and the requests stream), KMS and the SQS dead-letter queue; the
//! Concur sandbox seeded with users and the matching members imported; the poller on
//! its schedule and the worker behind the stream's event source mapping, both running
//! as their real release binaries. Then the verdict: what Concur and the table say
//! happened to every request.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use concur_sandbox::{spawn, Config, Sandbox};
use serde_json::{json, Value};
use triplink_shared::matching::Member;
use triplink_shared::members::dynamo::DynamoMemberDirectory;
use triplink_shared::store::tables;
use triplink_shared::testing;

use super::esm::{EventSourceMapping, MappingConfig, MappingStats, SqsDeadLetter};
use super::process::{FunctionConfig, FunctionStats, LambdaFunction};
use super::schedule::{ScheduleConfig, ScheduleStats, Scheduler};
use super::template::{LocalResource, StackSettings, Template};

/// Item states that end a request's life in the table.
pub const TERMINAL_STATES: &[&str] = &["reported"];

pub const REGION: &str = "us-east-1";
/// moto's account.
pub const ACCOUNT_ID: &str = "123456789012";

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StackError(String);

fn error(context: &str) -> impl Fn(String) -> StackError + '_ {
    move |message| StackError(format!("{context}: {message}"))
}

macro_rules! context {
    ($result:expr, $what:expr) => {
        $result.map_err(|e| StackError(format!("{}: {}", $what, e)))
    };
}

/// Set (to anything) to keep the working directories (with the functions' logs).
pub const KEEP_LOGS: &str = "TRIPLINK_E2E_KEEP_LOGS";

/// A directory removed when dropped (unless [`KEEP_LOGS`] is set).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> std::io::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os(KEEP_LOGS).is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How to bring the stack up.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub template: PathBuf,
    pub stack_name: String,
    /// Seeded Concur users, each with one pending request.
    pub users: usize,
    pub seed: u64,
    /// `sam deploy --parameter-overrides`.
    pub parameter_overrides: Vec<(String, String)>,
    pub poller_binary: PathBuf,
    pub worker_binary: PathBuf,
    /// The poller's schedule period (the template's `rate(...)` is a minute).
    pub poll_interval: Duration,
    /// Replaces `MaximumBatchingWindowInSeconds` when set.
    pub batching_window: Option<Duration>,
}

/// Where the requests stand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Requests Concur still has queued (pending or handed out, not popped).
    pub queued_at_concur: u64,
    pub table_items: u64,
    pub states: BTreeMap<String, u64>,
}

impl Progress {
    pub fn non_terminal(&self) -> u64 {
        self.states
            .iter()
            .filter(|(state, _)| !TERMINAL_STATES.contains(&state.as_str()))
            .map(|(_, n)| n)
            .sum()
    }

    /// Concur's queue empty and every stored request in a terminal state.
    pub fn drained(&self) -> bool {
        self.queued_at_concur == 0 && self.table_items > 0 && self.non_terminal() == 0
    }
}

/// The end result of a run.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub json: Value,
    pub lost: u64,
    pub doubled: u64,
    pub stuck: u64,
    pub dead_lettered: u64,
    pub mismatched: u64,
    /// Up to three dead-letter messages, as sent.
    pub dead_letter_samples: Vec<Value>,
    /// Up to three doubled requests: id, state and PUT history at Concur.
    pub doubled_samples: Vec<Value>,
}

/// The order of the verdict line's keys (the rest follow alphabetically).
const VERDICT_ORDER: [&str; 10] = [
    "scenario",
    "lost",
    "doubled",
    "stuck",
    "dead_lettered",
    "mismatched",
    "requests",
    "invocations",
    "crashes",
    "timeouts",
];

impl Verdict {
    /// One line of JSON, the counters that decide first.
    pub fn line(&self) -> String {
        let Some(object) = self.json.as_object() else {
            return self.json.to_string();
        };
        let mut keys: Vec<&String> = object.keys().collect();
        keys.sort_by_key(|k| {
            VERDICT_ORDER
                .iter()
                .position(|o| o == k)
                .unwrap_or(VERDICT_ORDER.len())
        });
        let fields: Vec<String> = keys
            .into_iter()
            .map(|k| format!("{}:{}", Value::String(k.clone()), object[k.as_str()]))
            .collect();
        format!("{{{}}}", fields.join(","))
    }

    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.doubled == 0
            && self.stuck == 0
            && self.dead_lettered == 0
            && self.mismatched == 0
    }
}

/// A running local stack. Dropping it stops the schedule and the mapping, kills every
/// function process, stops the sandbox and removes its working directory.
pub struct LocalStack {
    // Field order is drop order: traffic first, processes next, directory last.
    pub schedule: Option<Scheduler>,
    pub mapping: Option<EventSourceMapping>,
    pub poller: Arc<LambdaFunction>,
    pub worker: Arc<LambdaFunction>,
    pub sandbox: Sandbox,
    pub aws: SdkConfig,
    pub requests_table: String,
    /// The token vault's table (the worker's `CONNECTIONS_TABLE`).
    pub connections_table: String,
    pub dead_letter_queue_url: String,
    schedule_config: ScheduleConfig,
    mapping_config: MappingConfig,
    dead_letter: SqsDeadLetter,
    http: reqwest::Client,
    started: std::time::Instant,
    work_dir: TempDir,
}

impl LocalStack {
    /// Create everything; no traffic yet (see [`LocalStack::start_traffic`]).
    pub async fn start(options: StackOptions) -> Result<Self, StackError> {
        let started = std::time::Instant::now();
        let work_dir = context!(TempDir::new("triplink-e2e"), "temporary directory")?;
        let logs = work_dir.path().join("logs");
        context!(std::fs::create_dir_all(&logs), "log directory")?;

        let moto = testing::moto();
        let aws = testing::sdk_config();
        let dynamo = aws_sdk_dynamodb::Client::new(&aws);
        let sqs = aws_sdk_sqs::Client::new(&aws);

        let members_file = work_dir.path().join("members.json");
        let mut sandbox_config = Config::for_tests();
        sandbox_config.users = options.users;
        sandbox_config.seed = Some(options.seed);
        sandbox_config.members_out = Some(members_file.clone());
        let client_id = sandbox_config.client_id.clone();
        let client_secret = sandbox_config.client_secret.clone();
        let sandbox = context!(spawn(sandbox_config).await, "Concur sandbox")?;

        let prefix = testing::unique_name(&options.stack_name);
        let requests_table = format!("{prefix}-requests");
        let members_table = format!("{prefix}-members");
        let connections_table = format!("{prefix}-connections");
        context!(
            tables::create_requests_table(&dynamo, &requests_table).await,
            "requests table"
        )?;
        context!(
            tables::create_members_table(&dynamo, &members_table).await,
            "members table"
        )?;
        context!(
            tables::create_connections_table(&dynamo, &connections_table).await,
            "connections table"
        )?;
        let members_text = context!(std::fs::read_to_string(&members_file), "members file")?;
        let members: Vec<Member> = context!(serde_json::from_str(&members_text), "members file")?;
        let directory = DynamoMemberDirectory::new(dynamo.clone(), members_table.clone());
        for member in &members {
            context!(directory.put_member(member).await, "member import")?;
        }
        context!(
            directory.refresh_manifest(chrono::Utc::now()).await,
            "member manifest"
        )?;
        let stream_arn = context!(
            dynamo
                .describe_table()
                .table_name(&requests_table)
                .send()
                .await
                .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string()),
            "requests table"
        )?
        .table
        .and_then(|t| t.latest_stream_arn)
        .ok_or_else(|| StackError("the requests table has no stream".into()))?;

        let key_id = testing::kms_key().await;
        let key_arn = context!(
            aws_sdk_kms::Client::new(&aws)
                .describe_key()
                .key_id(&key_id)
                .send()
                .await
                .map_err(|e| aws_sdk_kms::error::DisplayErrorContext(e).to_string()),
            "KMS key"
        )?
        .key_metadata
        .and_then(|m| m.arn)
        .ok_or_else(|| StackError("the KMS key has no ARN".into()))?;

        let queue_name = format!("{prefix}-dlq");
        let queue_url = context!(
            sqs.create_queue()
                .queue_name(&queue_name)
                .send()
                .await
                .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string()),
            "dead-letter queue"
        )?
        .queue_url
        .ok_or_else(|| StackError("no queue URL".into()))?;
        let queue_arn = format!("arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{queue_name}");

        let table_arn = |name: &str| format!("arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name}");
        let resources = BTreeMap::from([
            (
                "RequestsTable".to_owned(),
                LocalResource::new(&requests_table)
                    .with("Arn", table_arn(&requests_table))
                    .with("StreamArn", &stream_arn),
            ),
            (
                "MembersTable".to_owned(),
                LocalResource::new(&members_table).with("Arn", table_arn(&members_table)),
            ),
            (
                "ConnectionsTable".to_owned(),
                LocalResource::new(&connections_table).with("Arn", table_arn(&connections_table)),
            ),
            (
                "ConnectorKey".to_owned(),
                LocalResource::new(&key_id).with("Arn", &key_arn),
            ),
            (
                "ConcurClientSecret".to_owned(),
                LocalResource::new(format!(
                    "arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:{prefix}-concur"
                )),
            ),
            (
                "WorkerDeadLetterQueue".to_owned(),
                LocalResource::new(&queue_url)
                    .with("Arn", &queue_arn)
                    .with("QueueName", &queue_name),
            ),
            // Named only: the local stack emulates no EventBridge rule or asynchronous
            // invocation (the unlink hook is invoked directly, as the rule would).
            (
                "UnlinkDeadLetterQueue".to_owned(),
                LocalResource::new(format!("{queue_url}-unlink"))
                    .with("Arn", format!("{queue_arn}-unlink"))
                    .with("QueueName", format!("{queue_name}-unlink")),
            ),
        ]);

        let template = context!(Template::load(&options.template), "template")?;
        let mut parameters = vec![
            ("ConcurClientId".to_owned(), client_id),
            ("LocalAwsEndpointUrl".to_owned(), moto.endpoint.clone()),
            // The members are imported (with their manifest) above: this stack is at the
            // README's last deploy step, the schedule enabled (the template's default is
            // DISABLED until then).
            ("PollScheduleState".to_owned(), "ENABLED".to_owned()),
        ];
        parameters.extend(options.parameter_overrides.iter().cloned());
        let settings = StackSettings {
            stack_name: options.stack_name.clone(),
            region: REGION.into(),
            account_id: ACCOUNT_ID.into(),
        };
        let stack = context!(
            template.stack(settings.clone(), &parameters, resources),
            "template"
        )?;
        // What events/env.json gives `sam local invoke`: Concur is the sandbox, the
        // client secret comes from a variable.
        let sandbox_url = sandbox.local_url.clone();
        let env_overrides = vec![
            ("CONCUR_API_BASE_URL".to_owned(), sandbox_url.clone()),
            ("CONCUR_AUTH_BASE_URL".to_owned(), sandbox_url.clone()),
            ("CONCUR_AUTHTOKEN_BASE_URL".to_owned(), sandbox_url),
            (
                "CONCUR_CLIENT_SECRET_SOURCE".to_owned(),
                "env:CONCUR_CLIENT_SECRET".to_owned(),
            ),
            ("CONCUR_CLIENT_SECRET".to_owned(), client_secret),
        ];

        let poller_spec = context!(stack.function("PollerFunction"), "PollerFunction")?;
        let worker_spec = context!(stack.function("WorkerFunction"), "WorkerFunction")?;
        let poller = LambdaFunction::new(context!(
            FunctionConfig::from_spec(
                &poller_spec,
                REGION,
                options.poller_binary.clone(),
                &env_overrides,
                logs.clone(),
            ),
            "PollerFunction"
        )?);
        let worker = LambdaFunction::new(context!(
            FunctionConfig::from_spec(
                &worker_spec,
                REGION,
                options.worker_binary.clone(),
                &env_overrides,
                logs,
            ),
            "WorkerFunction"
        )?);

        let schedule_event = poller_spec
            .events
            .iter()
            .find(|(_, e)| e.kind == "Schedule")
            .map(|(name, _)| name.clone())
            .ok_or_else(|| StackError("PollerFunction has no Schedule event".into()))?;
        let schedule_config = context!(
            ScheduleConfig::from_template(
                &poller_spec,
                &schedule_event,
                &settings,
                Some(options.poll_interval)
            ),
            "schedule"
        )?;
        let stream_event = worker_spec
            .events
            .iter()
            .find(|(_, e)| e.kind == "DynamoDB")
            .map(|(name, _)| name.clone())
            .ok_or_else(|| StackError("WorkerFunction has no DynamoDB event".into()))?;
        let mut mapping_config = context!(
            MappingConfig::from_template(&worker_spec, &stream_event),
            "stream mapping"
        )?;
        if let Some(window) = options.batching_window {
            mapping_config.batching_window = window;
        }
        let dead_letter = match &mapping_config.on_failure {
            Some(arn) => context!(SqsDeadLetter::new(sqs.clone(), arn).await, "OnFailure")?,
            None => {
                return Err(StackError(
                    "the mapping has no OnFailure destination".into(),
                ))
            }
        };

        Ok(Self {
            schedule: None,
            mapping: None,
            poller,
            worker,
            sandbox,
            aws,
            requests_table,
            connections_table,
            dead_letter_queue_url: queue_url,
            schedule_config,
            mapping_config,
            dead_letter,
            http: triplink_shared::testing::http_client(),
            started,
            work_dir,
        })
    }

    pub fn mapping_config(&self) -> &MappingConfig {
        &self.mapping_config
    }

    /// An event of the poller's schedule, as EventBridge would send it.
    pub fn schedule_event(&self) -> Value {
        self.schedule_config.event()
    }

    /// Where each environment's output is written.
    pub fn log_dir(&self) -> PathBuf {
        self.work_dir.path().join("logs")
    }

    /// Start the schedule and the stream mapping: the poller and the worker run
    /// concurrently on the same table from now on.
    pub async fn start_traffic(&mut self) -> Result<(), StackError> {
        let mapping = context!(
            EventSourceMapping::start(
                self.mapping_config.clone(),
                aws_sdk_dynamodbstreams::Client::new(&self.aws),
                self.worker.clone(),
                self.dead_letter.clone(),
            )
            .await,
            "stream mapping"
        )?;
        self.mapping = Some(mapping);
        self.schedule = Some(Scheduler::start(
            self.schedule_config.clone(),
            self.poller.clone(),
        ));
        Ok(())
    }

    /// Stop the schedule and the mapping (invocations in progress are cancelled).
    pub fn stop_traffic(&mut self) {
        if let Some(schedule) = &self.schedule {
            schedule.stop();
        }
        if let Some(mapping) = &mut self.mapping {
            mapping.stop();
        }
        self.poller.recycle();
        self.worker.recycle();
    }

    pub fn mapping_stats(&self) -> MappingStats {
        self.mapping.as_ref().map(|m| m.stats()).unwrap_or_default()
    }

    pub fn schedule_stats(&self) -> ScheduleStats {
        self.schedule
            .as_ref()
            .map(|s| s.stats())
            .unwrap_or_default()
    }

    async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, StackError> {
        let url = self.sandbox.url(path);
        let request = match method {
            "POST" => self.http.post(url).json(&body.unwrap_or(Value::Null)),
            "DELETE" => self.http.delete(url),
            _ => self.http.get(url),
        };
        let fail = error(path);
        let response = request.send().await.map_err(|e| fail(e.to_string()))?;
        let response = response
            .error_for_status()
            .map_err(|e| fail(e.to_string()))?;
        response.json().await.map_err(|e| fail(e.to_string()))
    }

    /// Add sandbox fault rules (`sandbox/README.md`, Fault injection).
    pub async fn add_faults(&self, rules: &[&str]) -> Result<Value, StackError> {
        self.admin("POST", "/_sandbox/faults", Some(json!({"rules": rules})))
            .await
    }

    pub async fn clear_faults(&self) -> Result<Value, StackError> {
        self.admin("DELETE", "/_sandbox/faults", None).await
    }

    /// Every item of the requests table as raw attributes (independent of the
    /// store's types, which may change).
    async fn table_items(&self) -> Result<Vec<Value>, StackError> {
        let dynamo = aws_sdk_dynamodb::Client::new(&self.aws);
        let items: Vec<_> = context!(
            dynamo
                .scan()
                .table_name(&self.requests_table)
                .consistent_read(true)
                .into_paginator()
                .items()
                .send()
                .collect::<Result<Vec<_>, _>>()
                .await
                .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string()),
            "scan"
        )?;
        Ok(items
            .into_iter()
            .map(|item| {
                let mut object = serde_json::Map::new();
                for (key, value) in item {
                    let value = match value {
                        aws_sdk_dynamodb::types::AttributeValue::S(s) => Value::String(s),
                        aws_sdk_dynamodb::types::AttributeValue::N(n) => Value::String(n),
                        other => Value::String(format!("{other:?}")),
                    };
                    object.insert(key, value);
                }
                Value::Object(object)
            })
            .collect())
    }

    pub async fn progress(&self) -> Result<Progress, StackError> {
        let summary = self.admin("GET", "/_sandbox/summary", None).await?;
        let queued =
            summary["pending"].as_u64().unwrap_or(0) + summary["in_flight"].as_u64().unwrap_or(0);
        let items = self.table_items().await?;
        let mut states = BTreeMap::new();
        for item in &items {
            let state = item["state"].as_str().unwrap_or("(none)").to_owned();
            *states.entry(state).or_insert(0) += 1;
        }
        Ok(Progress {
            queued_at_concur: queued,
            table_items: items.len() as u64,
            states,
        })
    }

    /// Poll until `done` holds or `limit` passes; the last progress seen.
    pub async fn wait_until(
        &self,
        limit: Duration,
        mut done: impl FnMut(&Self, &Progress) -> bool,
    ) -> Result<(bool, Progress), StackError> {
        let until = tokio::time::Instant::now() + limit;
        loop {
            let progress = self.progress().await?;
            if done(self, &progress) {
                return Ok((true, progress));
            }
            if tokio::time::Instant::now() >= until {
                return Ok((false, progress));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn dead_letters(&self) -> Result<(u64, Vec<Value>), StackError> {
        let sqs = aws_sdk_sqs::Client::new(&self.aws);
        let attributes = context!(
            sqs.get_queue_attributes()
                .queue_url(&self.dead_letter_queue_url)
                .attribute_names(
                    aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages
                )
                .attribute_names(
                    aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible
                )
                .send()
                .await
                .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string()),
            "dead-letter queue"
        )?
        .attributes
        .unwrap_or_default();
        let count: u64 = attributes
            .values()
            .filter_map(|v| v.parse::<u64>().ok())
            .sum();
        let mut samples = Vec::new();
        if count > 0 {
            let received = context!(
                sqs.receive_message()
                    .queue_url(&self.dead_letter_queue_url)
                    .max_number_of_messages(3)
                    .visibility_timeout(0)
                    .send()
                    .await
                    .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string()),
                "dead-letter queue"
            )?;
            for message in received.messages.unwrap_or_default() {
                if let Some(body) = message.body {
                    samples.push(serde_json::from_str(&body).unwrap_or(Value::String(body)));
                }
            }
        }
        Ok((count, samples))
    }

    /// What happened to every request, from Concur's side (the sandbox's history of
    /// every PUT), the table's and the dead-letter queue's.
    pub async fn verdict(&self, scenario: &str, drained: bool) -> Result<Verdict, StackError> {
        let verify = self.admin("GET", "/_sandbox/verify", None).await?;
        let requests = self.admin("GET", "/_sandbox/requests", None).await?;
        let items = self.table_items().await?;
        let (dead_lettered, dead_letter_samples) = self.dead_letters().await?;

        let count = |key: &str| verify[key].as_u64().unwrap_or(u64::MAX);
        let lost = count("unreported");
        let mismatched = count("mismatched");
        let mut doubled_ids = BTreeSet::new();
        let mut doubled_samples = Vec::new();
        for request in requests["requests"].as_array().into_iter().flatten() {
            let history = request["history"].as_array().cloned().unwrap_or_default();
            let rejected = history.iter().any(|h| h["accepted"] == false);
            let mut attempts = BTreeSet::new();
            let twice = history
                .iter()
                .filter(|h| h["accepted"] == true)
                .any(|h| !attempts.insert(h["attempt"].as_u64().unwrap_or(0)));
            if rejected || twice {
                doubled_ids.insert(request["id"].as_str().unwrap_or("?").to_owned());
                if doubled_samples.len() < 3 {
                    doubled_samples.push(json!({
                        "id": request["id"],
                        "state": request["state"],
                        "history": history,
                    }));
                }
            }
        }
        let doubled = (doubled_ids.len() as u64).max(count("duplicates"));
        let mut states: BTreeMap<String, u64> = BTreeMap::new();
        for item in &items {
            let state = item["state"].as_str().unwrap_or("(none)").to_owned();
            *states.entry(state).or_insert(0) += 1;
        }
        let stuck: u64 = states
            .iter()
            .filter(|(s, _)| !TERMINAL_STATES.contains(&s.as_str()))
            .map(|(_, n)| n)
            .sum();
        let worker: FunctionStats = self.worker.stats();
        let poller: FunctionStats = self.poller.stats();
        let mapping = self.mapping_stats();
        let schedule = self.schedule_stats();
        let json = json!({
            "scenario": scenario,
            "lost": lost,
            "doubled": doubled,
            "stuck": stuck,
            "dead_lettered": dead_lettered,
            "mismatched": mismatched,
            "requests": count("seeded"),
            "invocations": worker.invocations,
            "cold_starts": worker.cold_starts,
            "crashes": worker.crashes,
            "timeouts": worker.timeouts,
            "function_errors": worker.function_errors,
            "init_failures": worker.init_failures,
            "kills_injected": worker.kills_injected,
            "freezes_injected": worker.freezes_injected,
            "batch_item_failures": mapping.partial_failures,
            "retries": mapping.retries,
            "bisections": mapping.bisections,
            "dead_lettered_records": mapping.dead_lettered_records,
            "stream_records": mapping.records_read,
            "filtered_out": mapping.filtered_out,
            "poller_invocations": poller.invocations - poller.throttles,
            "poller_skipped_ticks": schedule.skipped,
            "poller_errors": poller.function_errors + poller.crashes + poller.timeouts + poller.init_failures,
            "runtime_api_refusals": worker.runtime_api_refusals + poller.runtime_api_refusals,
            "states": states,
            "drained": drained,
            "seconds": (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        });
        Ok(Verdict {
            json,
            lost,
            doubled,
            stuck,
            dead_lettered,
            mismatched,
            dead_letter_samples,
            doubled_samples,
        })
    }

    /// The last lines of every environment's output (for a failing test's report).
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        let Ok(entries) = std::fs::read_dir(self.log_dir()) else {
            return out;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            out.push_str(&format!(
                "--- {} ({} lines)\n",
                path.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
                all.len()
            ));
            for line in &all[start..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Stop everything and remove the working directory.
    pub async fn shutdown(mut self) {
        self.stop_traffic();
        self.schedule = None;
        self.mapping = None;
        self.poller.recycle();
        self.worker.recycle();
        let Self { sandbox, .. } = self;
        let _ = sandbox.shutdown().await;
    }
}
