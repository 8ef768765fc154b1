//! A DynamoDB fault-injection proxy for tests (feature `testing`).
//!
//! [`FaultProxy`] is a small HTTP/1.1 reverse proxy on `127.0.0.1:0` in front of a moto
//! server. The SDK talks to [`FaultProxy::endpoint`] instead of moto
//! (`testing::local_sdk_config(proxy.endpoint())`). Every request is forwarded to moto
//! byte for byte (method, path, headers including the SigV4 ones, body) and every answer
//! returned byte for byte, unless a [`Rule`] fires: then the proxy throttles, fails,
//! reports a spurious conflict, delays, or drops the connection before or after moto
//! has done the work. Tests use it to show that every state change survives throttling,
//! conflicts, timeouts and lost answers.
//!
//! ```rust,ignore
//! let proxy = FaultProxy::start(&testing::moto().endpoint);
//! let client = aws_sdk_dynamodb::Client::new(&testing::local_sdk_config(proxy.endpoint()));
//! // The next two claims of this table are throttled.
//! let rule = proxy.add(
//!     Rule::new(Op::UpdateItem)
//!         .table("requests")
//!         .body_contains("working")
//!         .throttle()
//!         .next(2),
//! );
//! // ... run the code under test with `client` ...
//! assert_eq!(proxy.fired(rule), 2);
//! assert_eq!(proxy.calls("UpdateItem"), 3);
//! ```
//!
//! The proxy runs on its own thread and runtime, so it works from any test (sync or
//! async, any runtime flavour); dropping the [`FaultProxy`] stops it and closes every
//! connection. Memory is bounded: nothing is recorded per request, messages are capped
//! at [`MAX_MESSAGE`] bytes, and the call counters at [`MAX_OPERATIONS`] names.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// The largest request or response (head and body) the proxy handles; larger ones drop
/// the connection. DynamoDB's own limit is 16 MB.
pub const MAX_MESSAGE: usize = 32 * 1024 * 1024;
/// How many distinct operation names [`FaultProxy::calls`] counts.
pub const MAX_OPERATIONS: usize = 256;
/// The journal keeps the first this many calls (operation and table), then stops growing.
pub const MAX_JOURNAL: usize = 100_000;
const MAX_HEAD: usize = 64 * 1024;
const JSON: &str = "application/x-amz-json-1.0";

/// The operation a rule matches: the name after the dot in `X-Amz-Target`
/// (`DynamoDB_20120810.UpdateItem`, `DynamoDBStreams_20120810.GetRecords`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Every request.
    Any,
    GetItem,
    PutItem,
    UpdateItem,
    DeleteItem,
    Query,
    Scan,
    BatchGetItem,
    BatchWriteItem,
    TransactGetItems,
    TransactWriteItems,
    DescribeTable,
    /// DynamoDB Streams.
    ListStreams,
    DescribeStream,
    GetShardIterator,
    GetRecords,
    /// Any other operation, by name.
    Named(String),
}

impl Op {
    /// The name as it appears in `X-Amz-Target` (`any` for [`Op::Any`]).
    pub fn name(&self) -> &str {
        match self {
            Op::Any => "any",
            Op::GetItem => "GetItem",
            Op::PutItem => "PutItem",
            Op::UpdateItem => "UpdateItem",
            Op::DeleteItem => "DeleteItem",
            Op::Query => "Query",
            Op::Scan => "Scan",
            Op::BatchGetItem => "BatchGetItem",
            Op::BatchWriteItem => "BatchWriteItem",
            Op::TransactGetItems => "TransactGetItems",
            Op::TransactWriteItems => "TransactWriteItems",
            Op::DescribeTable => "DescribeTable",
            Op::ListStreams => "ListStreams",
            Op::DescribeStream => "DescribeStream",
            Op::GetShardIterator => "GetShardIterator",
            Op::GetRecords => "GetRecords",
            Op::Named(name) => name,
        }
    }
}

/// What a rule does to a request it fires on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: the request is forwarded; the rule only counts (see [`FaultProxy::fired`]).
    /// Observing rules count every matching call whatever the other rules do.
    Observe,
    /// HTTP 400 `ProvisionedThroughputExceededException`; not forwarded. The SDK sees that
    /// error code and retries it as throttling (with retries on).
    Throttle,
    /// HTTP 500 `InternalServerError`; not forwarded. The SDK retries it as transient.
    Internal,
    /// HTTP 400 `ConditionalCheckFailedException`; not forwarded: a conflict as another
    /// writer would cause. For `TransactWriteItems` it is, as DynamoDB answers,
    /// `TransactionCanceledException` with one `ConditionalCheckFailed` cancellation
    /// reason (for the first action containing the rule's body text, else the first
    /// action with a condition, else the first) and `None` for the others. Not retried.
    Conditional,
    /// Wait, then forward normally: lets the SDK's attempt or operation timeout fire.
    /// The request still reaches moto after the wait, even when the client has given up
    /// (a late write).
    Delay(Duration),
    /// Close the connection without answering; not forwarded. The SDK sees a dispatch
    /// failure (an I/O error, retried as transient).
    DropBefore,
    /// Forward (moto does the work), then close the connection without answering: the
    /// lost answer. A retry then meets the effect of its own first attempt.
    DropAfter,
}

#[derive(Clone, Debug)]
enum Trigger {
    Always,
    Next(u64),
    Chance(f64, Box<StdRng>),
}

impl Trigger {
    fn fire(&mut self) -> bool {
        match self {
            Trigger::Always => true,
            Trigger::Next(0) => false,
            Trigger::Next(left) => {
                *left -= 1;
                true
            }
            Trigger::Chance(p, rng) => rng.random_bool(*p),
        }
    }
}

/// A fault rule: which requests it matches, when it fires and what it does. Built as
/// `Rule::new(op)` + filters + one fault (default [`Fault::Observe`]) + one trigger
/// (default always).
#[derive(Clone, Debug)]
pub struct Rule {
    op: Op,
    table: Option<String>,
    body: Option<String>,
    fault: Fault,
    trigger: Trigger,
}

impl Rule {
    /// A rule for one operation ([`Op::Any`]: every request) that only observes.
    pub fn new(op: Op) -> Self {
        Rule {
            op,
            table: None,
            body: None,
            fault: Fault::Observe,
            trigger: Trigger::Always,
        }
    }

    /// Only requests on this table: a `TableName` anywhere in the body (so the actions
    /// of transactions too), a key of `RequestItems` (batches), or the table of a
    /// `StreamArn` (Streams calls by ARN; `GetRecords` carries none).
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.table = Some(name.into());
        self
    }

    /// Only requests whose body (the JSON as sent) contains this text, e.g. a condition
    /// expression or an attribute value, to hit one specific write.
    pub fn body_contains(mut self, text: impl Into<String>) -> Self {
        self.body = Some(text.into());
        self
    }

    /// Do nothing but count ([`Fault::Observe`], the default).
    pub fn observe(self) -> Self {
        self.fault(Fault::Observe)
    }

    /// Answer `ProvisionedThroughputExceededException` ([`Fault::Throttle`]).
    pub fn throttle(self) -> Self {
        self.fault(Fault::Throttle)
    }

    /// Answer `InternalServerError` ([`Fault::Internal`]).
    pub fn internal(self) -> Self {
        self.fault(Fault::Internal)
    }

    /// Answer a failed condition ([`Fault::Conditional`]).
    pub fn conditional(self) -> Self {
        self.fault(Fault::Conditional)
    }

    /// Forward after a wait ([`Fault::Delay`]).
    pub fn delay(self, wait: Duration) -> Self {
        self.fault(Fault::Delay(wait))
    }

    /// Close without forwarding or answering ([`Fault::DropBefore`]).
    pub fn drop_before(self) -> Self {
        self.fault(Fault::DropBefore)
    }

    /// Forward, then close without answering ([`Fault::DropAfter`]).
    pub fn drop_after(self) -> Self {
        self.fault(Fault::DropAfter)
    }

    /// This fault.
    pub fn fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }

    /// Fire on every matching call (the default).
    pub fn always(mut self) -> Self {
        self.trigger = Trigger::Always;
        self
    }

    /// Fire on the next `n` matching calls only.
    pub fn next(mut self, n: u64) -> Self {
        self.trigger = Trigger::Next(n);
        self
    }

    /// Fire on each matching call with probability `p` (clamped to 0..=1), drawn from an
    /// RNG seeded with `seed`: the same calls give the same faults on every run.
    pub fn probability(mut self, p: f64, seed: u64) -> Self {
        let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        self.trigger = Trigger::Chance(p, Box::new(StdRng::seed_from_u64(seed)));
        self
    }

    fn matches(&self, op: &str, tables: &[String], body: &[u8]) -> bool {
        (self.op == Op::Any || self.op.name() == op)
            && self.table.as_ref().is_none_or(|t| tables.contains(t))
            && self
                .body
                .as_ref()
                .is_none_or(|text| find(body, text.as_bytes()).is_some())
    }
}

/// A rule added to a proxy, for [`FaultProxy::fired`] and [`FaultProxy::remove`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleId(usize);

#[derive(Default)]
struct State {
    rules: Vec<(RuleId, Rule)>,
    /// Faults fired, by rule id (ids are indexes; kept after a rule is removed).
    fired: Vec<u64>,
    calls: HashMap<String, u64>,
    /// Every call in arrival order, as `Operation table` (`Operation` without a table).
    journal: Vec<String>,
    /// Requests forwarded and not yet answered by the upstream, since when, and the
    /// total time at least one was (the upstream's busy time, for a serial upstream).
    in_flight: u32,
    busy_since: Option<std::time::Instant>,
    busy: Duration,
}

/// The proxy; see the module documentation. Stops when dropped.
pub struct FaultProxy {
    endpoint: String,
    state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Start a proxy on a free loopback port in front of `upstream`, an `http://host:port`
    /// endpoint such as `testing::moto().endpoint`. Panics if it cannot listen. Each
    /// request goes upstream over a fresh connection; if the upstream cannot be reached
    /// the proxy closes the client's connection (the SDK sees a dispatch failure).
    pub fn start(upstream: &str) -> Self {
        let upstream: Arc<str> = upstream
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default()
            .into();
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .unwrap_or_else(|e| panic!("fault proxy cannot listen on loopback: {e}"));
        let address = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("fault proxy has no address: {e}"));
        let state = Arc::new(Mutex::new(State::default()));
        let (stop, stopped) = oneshot::channel::<()>();
        let shared = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("fault proxy runtime: {e}"));
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener)
                        .unwrap_or_else(|e| panic!("fault proxy listener: {e}"));
                    tokio::select! {
                        _ = stopped => {}
                        () = serve(listener, upstream, shared) => {}
                    }
                });
                // Dropping the runtime drops every connection task and closes its sockets.
            })
            .unwrap_or_else(|e| panic!("fault proxy thread: {e}"));
        FaultProxy {
            endpoint: format!("http://{address}"),
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The endpoint to give the SDK, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Add a rule (evaluated after those added before it); returns its id.
    pub fn add(&self, rule: Rule) -> RuleId {
        let mut state = lock(&self.state);
        let id = RuleId(state.fired.len());
        state.fired.push(0);
        state.rules.push((id, rule));
        id
    }

    /// Remove one rule (its fired count stays readable).
    pub fn remove(&self, id: RuleId) {
        lock(&self.state).rules.retain(|(rule, _)| *rule != id);
    }

    /// Remove every rule: from now on the proxy only forwards (counters stay).
    pub fn clear(&self) {
        lock(&self.state).rules.clear();
    }

    /// How many times a rule has fired.
    pub fn fired(&self, id: RuleId) -> u64 {
        lock(&self.state).fired.get(id.0).copied().unwrap_or(0)
    }

    /// How many requests of an operation (e.g. `"UpdateItem"`) the proxy has seen, faulted
    /// or not; `"any"`: all requests; `""`: requests without `X-Amz-Target`.
    pub fn calls(&self, op: &str) -> u64 {
        let state = lock(&self.state);
        if op == Op::Any.name() {
            state.calls.values().sum()
        } else {
            state.calls.get(op).copied().unwrap_or(0)
        }
    }
}

impl FaultProxy {
    /// The calls seen so far, in arrival order, each as `Operation table` (the first table
    /// the request names) or `Operation`; at most [`MAX_JOURNAL`].
    pub fn journal(&self) -> Vec<String> {
        lock(&self.state).journal.clone()
    }

    /// How long, in all, at least one forwarded request was waiting for the upstream's
    /// answer: the busy time of an upstream that serves one request at a time (moto).
    pub fn upstream_busy(&self) -> Duration {
        let state = lock(&self.state);
        state.busy
            + state
                .busy_since
                .map(|since| since.elapsed())
                .unwrap_or_default()
    }

    /// Forget the journal (the counters stay).
    pub fn clear_journal(&self) {
        lock(&self.state).journal.clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What to do with one request.
enum Action {
    Forward {
        delay: Option<Duration>,
        drop_after: bool,
    },
    Answer(Vec<u8>),
    Drop,
}

/// Count the call, then let the rules decide: observing rules count every matching call;
/// of the others, the first (in order of adding) that matches and triggers decides.
fn decide(state: &Mutex<State>, op: &str, body: &[u8]) -> Action {
    let tables = table_names(body);
    let mut state = lock(state);
    let State {
        rules,
        fired,
        calls,
        journal,
        ..
    } = &mut *state;
    if journal.len() < MAX_JOURNAL {
        journal.push(match tables.first() {
            Some(table) => format!("{op} {table}"),
            None => op.to_owned(),
        });
    }
    if let Some(count) = calls.get_mut(op) {
        *count += 1;
    } else if calls.len() < MAX_OPERATIONS {
        calls.insert(op.to_owned(), 1);
    }
    let mut action = None;
    for (id, rule) in rules.iter_mut() {
        let observe = rule.fault == Fault::Observe;
        if (action.is_some() && !observe) || !rule.matches(op, &tables, body) {
            continue;
        }
        if !rule.trigger.fire() {
            continue;
        }
        if let Some(count) = fired.get_mut(id.0) {
            *count += 1;
        }
        action = action.or(match &rule.fault {
            Fault::Observe => None,
            Fault::Throttle => Some(Action::Answer(error(
                400,
                "ProvisionedThroughputExceededException",
                "The level of configured provisioned throughput for the table was exceeded. \
                 Consider increasing your provisioning level with the UpdateTable API.",
                None,
            ))),
            Fault::Internal => Some(Action::Answer(error(
                500,
                "InternalServerError",
                "Internal server error",
                None,
            ))),
            Fault::Conditional if op == Op::TransactWriteItems.name() => Some(Action::Answer(
                transaction_canceled(body, rule.body.as_deref()),
            )),
            Fault::Conditional => Some(Action::Answer(error(
                400,
                "ConditionalCheckFailedException",
                "The conditional request failed",
                None,
            ))),
            Fault::Delay(wait) => Some(Action::Forward {
                delay: Some(*wait),
                drop_after: false,
            }),
            Fault::DropBefore => Some(Action::Drop),
            Fault::DropAfter => Some(Action::Forward {
                delay: None,
                drop_after: true,
            }),
        });
    }
    action.unwrap_or(Action::Forward {
        delay: None,
        drop_after: false,
    })
}

/// A DynamoDB JSON error answer, as the SDK parses it: the code from `__type` after `#`.
fn error(status: u16, code: &str, message: &str, extra: Option<(&str, Value)>) -> Vec<u8> {
    let mut body = json!({
        "__type": format!("com.amazonaws.dynamodb.v20120810#{code}"),
        "message": message,
    });
    if let (Some((key, value)), Some(object)) = (extra, body.as_object_mut()) {
        object.insert(key.to_owned(), value);
    }
    let body = body.to_string();
    let reason = if status == 500 {
        "Internal Server Error"
    } else {
        "Bad Request"
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {JSON}\r\nContent-Length: {}\r\n\
         x-amzn-RequestId: FAULTPROXY\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn transaction_canceled(body: &[u8], text: Option<&str>) -> Vec<u8> {
    let actions: Vec<String> = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|request| request.get("TransactItems")?.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(Value::to_string)
        .collect();
    let failed = text
        .and_then(|text| actions.iter().position(|a| a.contains(text)))
        .or_else(|| {
            actions
                .iter()
                .position(|a| a.contains("ConditionExpression"))
        })
        .unwrap_or(0);
    let codes: Vec<&str> = (0..actions.len().max(1))
        .map(|i| {
            if i == failed {
                "ConditionalCheckFailed"
            } else {
                "None"
            }
        })
        .collect();
    let reasons = codes
        .iter()
        .map(|code| match *code {
            "None" => json!({ "Code": code }),
            _ => json!({ "Code": code, "Message": "The conditional request failed" }),
        })
        .collect();
    error(
        400,
        "TransactionCanceledException",
        &format!(
            "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
            codes.join(", ")
        ),
        Some(("CancellationReasons", Value::Array(reasons))),
    )
}

/// The tables a request names (see [`Rule::table`]).
fn table_names(body: &[u8]) -> Vec<String> {
    fn collect(value: &Value, names: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("TableName", Value::String(name)) => names.push(name.clone()),
                        ("StreamArn", Value::String(arn)) => names.extend(
                            arn.split_once(":table/")
                                .and_then(|(_, rest)| rest.split('/').next())
                                .map(str::to_owned),
                        ),
                        ("RequestItems", Value::Object(batch)) => {
                            names.extend(batch.keys().cloned());
                            collect(value, names);
                        }
                        _ => collect(value, names),
                    }
                }
            }
            Value::Array(values) => values.iter().for_each(|v| collect(v, names)),
            _ => {}
        }
    }
    let mut names = Vec::new();
    if let Ok(request) = serde_json::from_slice::<Value>(body) {
        collect(&request, &mut names);
    }
    names
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn serve(listener: TcpListener, upstream: Arc<str>, state: Arc<Mutex<State>>) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                tokio::spawn(connection(
                    Wire::new(client),
                    Arc::clone(&upstream),
                    Arc::clone(&state),
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "fault proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Serve one client connection, request after request, until either side closes it or a
/// rule drops it.
async fn connection(mut client: Wire, upstream: Arc<str>, state: Arc<Mutex<State>>) {
    loop {
        let request = match read_message(&mut client, Side::Request).await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "fault proxy: unreadable request");
                return;
            }
        };
        let target = request.header("x-amz-target").unwrap_or_default();
        let op = target.rsplit_once('.').map_or(target, |(_, op)| op);
        let keep_alive = match decide(&state, op, &request.body) {
            Action::Drop => return,
            Action::Answer(answer) => client.write_all(&answer).await.is_ok() && request.keep_alive,
            Action::Forward { delay, drop_after } => {
                if let Some(wait) = delay {
                    tokio::time::sleep(wait).await;
                }
                upstream_started(&state);
                let forwarded = forward(&upstream, &request).await;
                upstream_ended(&state);
                let response = match forwarded {
                    Ok(response) => response,
                    Err(e) => {
                        tracing::warn!(error = %e, %upstream, "fault proxy: upstream failed");
                        return;
                    }
                };
                !drop_after
                    && client.write_all(&response.raw).await.is_ok()
                    && request.keep_alive
                    && response.keep_alive
            }
        };
        if !keep_alive {
            return;
        }
    }
}

fn upstream_started(state: &Mutex<State>) {
    let mut state = lock(state);
    if state.in_flight == 0 {
        state.busy_since = Some(std::time::Instant::now());
    }
    state.in_flight += 1;
}

fn upstream_ended(state: &Mutex<State>) {
    let mut state = lock(state);
    state.in_flight = state.in_flight.saturating_sub(1);
    if state.in_flight == 0 {
        if let Some(since) = state.busy_since.take() {
            state.busy += since.elapsed();
        }
    }
}

/// Send a request as received over a fresh upstream connection; read its answer.
async fn forward(upstream: &str, request: &Message) -> io::Result<Message> {
    let mut wire = Wire::new(TcpStream::connect(upstream).await?);
    wire.write_all(&request.raw).await?;
    let head_request = request.start.starts_with("HEAD ");
    loop {
        let response = read_message(&mut wire, Side::Response { head_request })
            .await?
            .ok_or_else(|| eof("upstream closed without answering"))?;
        // Interim answers (100 Continue) were given to the client by the proxy itself.
        if !(100..200).contains(&response.status) {
            return Ok(response);
        }
    }
}

#[derive(Clone, Copy)]
enum Side {
    Request,
    Response { head_request: bool },
}

/// One HTTP/1.x message: its exact bytes, and what the proxy needs to know of it.
struct Message {
    raw: Vec<u8>,
    start: String,
    status: u16,
    headers: Vec<(String, String)>,
    /// The body, de-chunked.
    body: Vec<u8>,
    keep_alive: bool,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Read one message off a connection; `None` if it closes cleanly before one starts.
async fn read_message(wire: &mut Wire, side: Side) -> io::Result<Option<Message>> {
    let head_end = loop {
        if let Some(i) = find(&wire.buf, b"\r\n\r\n") {
            break i + 4;
        }
        if wire.buf.len() > MAX_HEAD {
            return Err(invalid("message head too large"));
        }
        if !wire.fill().await? {
            return match wire.buf.iter().all(|b| b.is_ascii_whitespace()) {
                true => Ok(None),
                false => Err(eof("connection closed inside a message head")),
            };
        }
    };
    let head = std::str::from_utf8(&wire.buf[..head_end - 4])
        .map_err(|_| invalid("message head is not UTF-8"))?;
    let mut lines = head.trim_start_matches("\r\n").split("\r\n");
    let start = lines.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let mut message = Message {
        raw: Vec::new(),
        status: 0,
        start,
        headers,
        body: Vec::new(),
        keep_alive: false,
    };
    let version = match side {
        Side::Request => message.start.rsplit(' ').next(),
        Side::Response { .. } => message.start.split(' ').next(),
    }
    .unwrap_or_default()
    .to_owned();
    let chunked = message
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let length = message
        .header("content-length")
        .map(|n| {
            n.parse::<usize>()
                .map_err(|_| invalid("bad Content-Length"))
        })
        .transpose()?;
    let mut until_close = false;
    if let Side::Response { head_request } = side {
        message.status = message
            .start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid("bad status line"))?;
        if head_request || matches!(message.status, 100..=199 | 204 | 304) {
            wire.finish(&mut message, head_end);
            return Ok(Some(message));
        }
        until_close = !chunked && length.is_none();
    } else if message
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        wire.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    let connection = message
        .header("connection")
        .unwrap_or_default()
        .to_ascii_lowercase();
    message.keep_alive = !until_close
        && if version == "HTTP/1.0" {
            connection.contains("keep-alive")
        } else {
            !connection.contains("close")
        };

    let end = if chunked {
        let mut at = head_end;
        loop {
            let line_end = wire.line(at).await?;
            let size = std::str::from_utf8(&wire.buf[at..line_end - 2])
                .ok()
                .and_then(|line| line.split(';').next())
                .and_then(|size| usize::from_str_radix(size.trim(), 16).ok())
                .ok_or_else(|| invalid("bad chunk size"))?;
            at = line_end;
            if size == 0 {
                break;
            }
            wire.ensure(at + size + 2).await?;
            message.body.extend_from_slice(&wire.buf[at..at + size]);
            at += size + 2;
        }
        // Trailers, up to an empty line.
        loop {
            let line_end = wire.line(at).await?;
            let empty = line_end == at + 2;
            at = line_end;
            if empty {
                break at;
            }
        }
    } else if until_close {
        while wire.fill().await? {}
        wire.buf.len()
    } else {
        let end = head_end + length.unwrap_or(0);
        wire.ensure(end).await?;
        end
    };
    if !chunked {
        message.body = wire.buf[head_end..end].to_vec();
    }
    wire.finish(&mut message, end);
    Ok(Some(message))
}

/// A TCP connection with the bytes read from it but not yet consumed. Plain readiness
/// calls, so it needs no more of tokio than the `net` feature.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    fn new(stream: TcpStream) -> Self {
        Wire {
            stream,
            buf: Vec::new(),
        }
    }

    /// Read more bytes; `false` at end of stream.
    async fn fill(&mut self) -> io::Result<bool> {
        if self.buf.len() >= MAX_MESSAGE {
            return Err(invalid("message too large"));
        }
        let start = self.buf.len();
        self.buf.resize(start + 16 * 1024, 0);
        let read = loop {
            if let Err(e) = self.stream.readable().await {
                break Err(e);
            }
            match self.stream.try_read(&mut self.buf[start..]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => break result,
            }
        };
        self.buf.truncate(start + *read.as_ref().unwrap_or(&0));
        Ok(read? > 0)
    }

    /// Have at least `len` bytes buffered.
    async fn ensure(&mut self, len: usize) -> io::Result<()> {
        while self.buf.len() < len {
            if !self.fill().await? {
                return Err(eof("connection closed inside a message"));
            }
        }
        Ok(())
    }

    /// The index just past the first CRLF at or after `from`.
    async fn line(&mut self, from: usize) -> io::Result<usize> {
        loop {
            if let Some(i) = self.buf.get(from..).and_then(|rest| find(rest, b"\r\n")) {
                return Ok(from + i + 2);
            }
            if !self.fill().await? {
                return Err(eof("connection closed inside a chunked body"));
            }
        }
    }

    /// Move the message's bytes (`..end`) out of the buffer into it.
    fn finish(&mut self, message: &mut Message, end: usize) {
        message.raw = self.buf.drain(..end).collect();
    }

    async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            self.stream.writable().await?;
            match self.stream.try_write(data) {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn eof(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, what.to_owned())
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}
