//! Test support (feature `testing`): a real local DynamoDB (`moto_server`) started on a
//! free loopback port, and SDK clients pointed at it with dummy credentials.
//!
//! One moto server serves a whole test binary; tests isolate themselves with unique
//! table names. The server is started through a small shell watchdog that stops it when
//! the test process exits, so no server outlives its tests.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;

/// A running moto server.
pub struct Moto {
    pub endpoint: String,
    _watchdog: Child,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

fn start() -> Moto {
    let binary = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
    let port = free_port();
    let script = format!(
        "{binary} -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; \
         while kill -0 {parent} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 0.5; done; \
         kill $m 2>/dev/null; wait $m 2>/dev/null",
        parent = std::process::id()
    );
    let watchdog = Command::new("sh")
        .arg("-c")
        .arg(script)
        // Not the parent's pipes: a process that reads this one's output to its end
        // (a test running a binary that uses this harness) must not wait for moto.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start moto_server through sh: {e}"));
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    let started = Instant::now();
    while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "moto_server did not listen on {address} within 60 s; is it installed? \
             (`make test` installs it into .venv; or set MOTO_SERVER to its path)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto {
        endpoint: format!("http://{address}"),
        _watchdog: watchdog,
    }
}

/// The moto server of this test process, started on first use.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(start)
}

/// An SDK configuration for a local endpoint: dummy credentials, region `us-east-1`.
pub fn local_sdk_config(endpoint: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(crate::http::SdkHttpClient::shared())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(Credentials::new(
                "test",
                "test",
                None,
                None,
                "triplink-tests",
            )),
        )
        .build()
}

/// A plain HTTP client for tests and local tools, on the shared stack ([`crate::http`]):
/// reqwest's own default needs a process-wide rustls provider, which nothing installs.
pub fn http_client() -> reqwest::Client {
    crate::http::client_builder()
        .and_then(|b| b.build().map_err(|e| e.to_string()))
        .unwrap_or_else(|e| panic!("HTTP client: {e}"))
}

/// A DynamoDB client for the shared moto server.
pub fn dynamodb() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&local_sdk_config(&moto().endpoint))
}

/// A table name no other test of this process uses.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The SDK configuration for the shared moto server.
pub fn sdk_config() -> SdkConfig {
    local_sdk_config(&moto().endpoint)
}

/// A fresh symmetric KMS key on the shared moto server; returns its id.
pub async fn kms_key() -> String {
    aws_sdk_kms::Client::new(&sdk_config())
        .create_key()
        .description("triplink tests")
        .send()
        .await
        .unwrap_or_else(|e| panic!("moto KMS CreateKey: {e}"))
        .key_metadata
        .map(|m| m.key_id)
        .unwrap_or_else(|| panic!("moto KMS returned no key"))
}

/// Write a requests-table item exactly as given (to set up a state a test starts from).
pub async fn put_request(
    store: &crate::store::DynamoRequestStore,
    item: &crate::store::RequestItem,
) {
    let attributes = serde_dynamo::to_item(item)
        .unwrap_or_else(|e| panic!("item {} does not serialise: {e}", item.request_id));
    store
        .client()
        .put_item()
        .table_name(store.table())
        .set_item(Some(attributes))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutItem {}: {e}", item.request_id));
}

/// Every item of a requests table (all scan pages), sorted by request id.
pub async fn scan_requests(
    store: &crate::store::DynamoRequestStore,
) -> Vec<crate::store::RequestItem> {
    let raw: Vec<_> = store
        .client()
        .scan()
        .table_name(store.table())
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap_or_else(|e| panic!("Scan {}: {e}", store.table()));
    let mut items: Vec<crate::store::RequestItem> = raw
        .into_iter()
        .map(|item| {
            serde_dynamo::from_item(item).unwrap_or_else(|e| panic!("unreadable item: {e}"))
        })
        .collect();
    items.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    items
}

/// Log lines captured as the functions print them ([`crate::telemetry::json_subscriber`]),
/// on the current thread while this lives (a `#[tokio::test]` runs its tasks there).
pub struct CapturedLogs {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl CapturedLogs {
    /// Every line so far, parsed (a line that is not JSON fails the test).
    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"))
            })
            .collect()
    }

    /// The lines whose `message` is `message`.
    pub fn with_message(&self, message: &str) -> Vec<serde_json::Value> {
        self.lines()
            .into_iter()
            .filter(|line| line["message"] == message)
            .collect()
    }
}

/// Capture the log lines of this thread at `filter` (a `RUST_LOG` directive such as
/// `info` or `debug`) until the returned value is dropped.
pub fn capture_logs(filter: &str) -> CapturedLogs {
    // tracing caches each callsite's interest process-wide. With a single registered
    // dispatcher it asks the *current thread's* default when a callsite is first hit, so
    // a test on another thread (no subscriber) would cache "never" for a line this
    // capture wants. A second dispatcher, kept for the process, makes tracing combine
    // every registered one instead.
    static SECOND: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
    SECOND.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = {
        let lines = lines.clone();
        crate::telemetry::LineSink::new(move |line| {
            lines
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(line.to_owned())
        })
    };
    let subscriber =
        crate::telemetry::json_subscriber(sink, tracing_subscriber::EnvFilter::new(filter));
    CapturedLogs {
        lines,
        _guard: tracing::subscriber::set_default(subscriber),
    }
}

/// A received request's item as the requests table's stream carries it (a new image):
/// Maria Smith, loyalty number 5314636889, request token `tok-7781`.
pub fn received_image() -> std::collections::HashMap<String, serde_dynamo::AttributeValue> {
    let wire = crate::model::WireConnectionRequest {
        id: Some("r-1".into()),
        user_id: Some("u-1".into()),
        first_name: Some("Maria".into()),
        last_name: Some("Smith".into()),
        loyalty_number: Some("5314636889".into()),
        request_token: Some("tok-7781".into()),
        emails: [Some("maria@example.com".into()), None, None, None, None],
        ..Default::default()
    };
    let request = crate::model::ConnectionRequest::from_wire(wire)
        .unwrap_or_else(|e| panic!("the fixture request is readable: {e}"));
    let item = crate::store::RequestItem::received(&request, chrono::Utc::now());
    serde_dynamo::to_item(item).unwrap_or_else(|e| panic!("the fixture item serialises: {e}"))
}

/// The user's tokens for a request the sandbox served: its single-use request token
/// exchanged, as the worker does on a match.
pub async fn exchange(
    concur: &crate::concur::ConcurClient,
    request: &crate::model::ConnectionRequest,
) -> crate::concur::UserTokens {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (Some(user_id), Some(token)) = (request.user_id.as_deref(), &request.request_token) else {
        panic!("request {} has no user id or request token", request.id);
    };
    concur
        .exchange_request_token(user_id, token, deadline)
        .await
        .unwrap_or_else(|e| panic!("the exchange of request {} failed: {e}", request.id))
}

/// What a function binary's failed cold start sent to Lambda's Runtime API.
#[derive(Debug)]
pub struct ColdStart {
    /// Each `/runtime/init/error` post: its `Lambda-Runtime-Function-Error-Type` header
    /// and its JSON body.
    pub init_errors: Vec<(String, serde_json::Value)>,
    /// Requests for an invocation (`/runtime/invocation/next`): none after an init error.
    pub nexts: usize,
    /// Every request the Runtime API received.
    pub requests: usize,
}

/// Start `binary` with only `vars`, a region, a function name and the address of a stub
/// Runtime API set, wait for it to exit (it must fail: a configuration error) and return
/// what it sent to the Runtime API.
pub async fn cold_start(binary: &std::path::Path, vars: &[(&str, &str)]) -> ColdStart {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    const INIT_ERROR: &str = "/2018-06-01/runtime/init/error";
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(INIT_ERROR))
        .respond_with(ResponseTemplate::new(202).set_body_string(r#"{"status":"OK"}"#))
        .mount(&api)
        .await;
    let name = binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut child = Command::new(binary)
        .env_clear()
        .envs(vars.iter().copied())
        .env("AWS_LAMBDA_RUNTIME_API", api.address().to_string())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_LAMBDA_FUNCTION_NAME", &name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("{name}: {e}")) {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().ok();
            panic!("{name} did not exit after a configuration error");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "a failed cold start exits with an error");
    let received = api.received_requests().await.unwrap_or_default();
    let init_errors = received
        .iter()
        .filter(|r| r.url.path() == INIT_ERROR)
        .map(|r| {
            let header = r
                .headers
                .get("lambda-runtime-function-error-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = serde_json::from_slice(&r.body)
                .unwrap_or_else(|e| panic!("the init error is not JSON: {e}"));
            (header, body)
        })
        .collect();
    let nexts = received
        .iter()
        .filter(|r| r.url.path().ends_with("/invocation/next"))
        .count();
    ColdStart {
        init_errors,
        nexts,
        requests: received.len(),
    }
}
