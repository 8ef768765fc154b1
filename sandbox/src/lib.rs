//! # concur-sandbox
//!
//! A local Concur: the OAuth2 token endpoint and the Connection Requests API
//! (v3.0, v3.1, v3.2) as the reference pages describe them, plus an admin API
//! (`/_sandbox/...`) with a virtual clock, fault injection and a full history
//! of every request. Written from the documents, independently of the
//! connector's own models.
//!
//! Start it in-process from a test:
//!
//! ```no_run
//! # async fn demo() -> Result<(), concur_sandbox::StartError> {
//! let sandbox = concur_sandbox::spawn(concur_sandbox::Config::for_tests()).await?;
//! let url = sandbox.url("/oauth2/v0/token");
//! # let _ = url; Ok(()) }
//! ```

pub mod admin;
pub mod api;
pub mod cases;
pub mod clock;
pub mod config;
pub mod faults;
pub mod formats;
pub mod oauth;
pub mod seed;
pub mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration as StdDuration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, post};
use axum::Router;
use chrono::{DateTime, Utc};
use futures::stream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::clock::VirtualClock;
pub use crate::config::Config;
use crate::faults::{FaultKind, FaultRule, Faults, RouteSel};
use crate::formats::Format;
use crate::state::{Rules, World};

/// Settings fixed at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL written into `NextPage` and `URI` (no trailing slash).
    pub base_url: String,
    /// `geolocation` of token responses.
    pub geolocation: String,
    pub client_id: String,
    pub client_secret: String,
    /// Status for an expired or revoked bearer token (401 or 403).
    pub expired_token_status: StatusCode,
}

/// Shared server state.
#[derive(Debug)]
pub struct AppState {
    pub world: Mutex<World>,
    pub clock: VirtualClock,
    pub faults: Mutex<Faults>,
    pub settings: Settings,
}

impl AppState {
    /// Locks the world (recovering from a poisoned lock: the data stays usable).
    pub fn world(&self) -> MutexGuard<'_, World> {
        match self.world.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        match self.faults.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

pub type SharedState = Arc<AppState>;

/// Errors while starting the sandbox.
#[derive(Debug)]
pub enum StartError {
    Io(std::io::Error),
    Config(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Io(e) => write!(f, "{e}"),
            StartError::Config(e) => write!(f, "{e}"),
        }
    }
}
impl std::error::Error for StartError {}
impl From<std::io::Error> for StartError {
    fn from(e: std::io::Error) -> Self {
        StartError::Io(e)
    }
}

/// A running sandbox.
pub struct Sandbox {
    /// The bound address.
    pub addr: SocketAddr,
    /// `http://<addr>`: where to send requests.
    pub local_url: String,
    /// Shared state, for white-box assertions in tests.
    pub state: SharedState,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<std::io::Result<()>>,
}

impl Sandbox {
    /// `http://<addr><path>`
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.local_url, path)
    }
    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match (&mut self.handle).await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
    /// Runs until the server stops (for the binary).
    pub async fn wait(mut self) -> std::io::Result<()> {
        match (&mut self.handle).await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Builds the state from a configuration (no seeding).
pub fn build_state(config: &Config, addr: SocketAddr) -> Result<SharedState, StartError> {
    let start = match &config.clock_start {
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map_err(|e| StartError::Config(format!("--clock-start {s:?}: {e}")))?
            .with_timezone(&Utc),
        None => {
            let now = Utc::now();
            now - chrono::Duration::nanoseconds(i64::from(now.timestamp_subsec_nanos()))
        }
    };
    let rules = Rules {
        access_token_ttl: config.access_token_ttl,
        request_token_ttl: config.request_token_ttl,
        refresh_token_ttl: config.refresh_token_ttl,
        creu_delay: config.creu_delay,
        creu_max_requeues: config.creu_max_requeues,
        crret_delay: config.crret_delay,
        crret_max_requeues: config.crret_max_requeues,
        supersede_request_tokens: config.supersede_request_tokens,
    };
    let mut rules_f = Vec::new();
    for spec in &config.faults {
        rules_f.push(FaultRule::parse(spec).map_err(StartError::Config)?);
    }
    let base_url = config
        .public_base_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"))
        .trim_end_matches('/')
        .to_string();
    // The sandbox's own loopback base unless told otherwise: a client that follows the
    // geolocation (as the OAuth2 page says it must) keeps talking to this server even
    // when NextPage and URI name a public host.
    let geolocation = config
        .geolocation
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"))
        .trim_end_matches('/')
        .to_string();
    let expired = StatusCode::from_u16(config.expired_token_status)
        .map_err(|e| StartError::Config(e.to_string()))?;
    Ok(Arc::new(AppState {
        world: Mutex::new(World::new(
            rules,
            config.seed.unwrap_or(0) ^ 0x5eed_c0c0_5a4d_b0c5,
        )),
        clock: VirtualClock::new(start, config.frozen_clock),
        faults: Mutex::new(Faults::new(config.fault_seed, rules_f)),
        settings: Settings {
            base_url,
            geolocation,
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            expired_token_status: expired,
        },
    }))
}

/// The HTTP routes.
pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/oauth2/v0/token", post(oauth::token))
        .route("/app-mgmt/v0/connections", delete(oauth::revoke))
        .route("/api/{*rest}", any(api::dispatch))
        .nest("/_sandbox", admin::router())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), fault_layer))
        .layer(middleware::from_fn(log_layer))
        .with_state(state)
}

async fn not_found(State(state): State<SharedState>, req: Request) -> Response {
    let f = Format::from_accept(
        req.headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    api::error(
        &state,
        StatusCode::NOT_FOUND,
        f,
        "The requested resource was not found.",
    )
}

/// Binds, seeds (per `--seed/--users`) and serves in the background.
pub async fn spawn(config: Config) -> Result<Sandbox, StartError> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let state = build_state(&config, addr)?;
    if config.users > 0 {
        let seed = config.seed.unwrap_or(0);
        let data = admin::apply_seed(&state, seed, config.users)?;
        if let Some(path) = &config.members_out {
            admin::write_seed_files(&data, path, config.expected_out.as_deref())?;
        }
    }
    if let Some(path) = &config.addr_file {
        std::fs::write(path, addr.to_string())?;
    }
    let app = router(state.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
    });
    tracing::info!(%addr, base_url = %state.settings.base_url, "concur-sandbox listening");
    Ok(Sandbox {
        addr,
        local_url: format!("http://{addr}"),
        state,
        shutdown: Some(tx),
        handle,
    })
}

/// The route class of a call, for fault rules (`None` for admin calls).
pub fn classify(method: &Method, path: &str) -> Option<RouteSel> {
    if path.starts_with("/_sandbox") {
        return None;
    }
    if path == "/oauth2/v0/token" {
        return Some(RouteSel::Token);
    }
    if path.starts_with("/app-mgmt/") {
        return Some(RouteSel::Revoke);
    }
    match api::parse_path(path) {
        Some((_, None)) if method == Method::GET => Some(RouteSel::List),
        Some((_, None)) if method == Method::POST => Some(RouteSel::Create),
        Some((_, Some(_))) if method == Method::GET => Some(RouteSel::Get),
        Some((_, Some(_))) if method == Method::PUT => Some(RouteSel::Put),
        _ => Some(RouteSel::Any),
    }
}

fn dropped_body() -> Body {
    Body::from_stream(stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "fault injection: connection dropped",
        ))
    }))
}

/// A response whose body fails at once: the client gets no complete response
/// and the connection is closed.
fn dropped() -> Response {
    let mut r = Response::new(dropped_body());
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("4096"));
    r
}

/// Is this token-endpoint body a password grant with `credtype=authtoken`?
fn is_authtoken_grant(body: &[u8]) -> bool {
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    get("grant_type").as_deref() == Some("password")
        && get("credtype").as_deref() == Some("authtoken")
}

async fn fault_layer(State(state): State<SharedState>, mut req: Request, next: Next) -> Response {
    let mut route = classify(req.method(), req.uri().path());
    if route == Some(RouteSel::Token) && req.method() == Method::POST {
        // The exchange is told apart by its form body, which is put back as it was.
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, 64 << 10)
            .await
            .unwrap_or_default();
        if is_authtoken_grant(&bytes) {
            route = Some(RouteSel::Authtoken);
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    let decision = state.faults().decide(route, state.now());
    if decision.latency_ms > 0 {
        tokio::time::sleep(StdDuration::from_millis(decision.latency_ms)).await;
    }
    let Some(action) = decision.action else {
        return next.run(req).await;
    };
    let format = Format::from_accept(
        req.headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    tracing::warn!(fault = ?action, path = %req.uri().path(), "injecting fault");
    match action {
        FaultKind::Latency { .. } => next.run(req).await,
        FaultKind::TooManyRequests { retry_after } => {
            let mut r = api::error(
                &state,
                StatusCode::TOO_MANY_REQUESTS,
                format,
                "Too many requests. Slow the rate of requests.",
            );
            if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        FaultKind::Status {
            code,
            after,
            retry_after,
        } => {
            if after {
                let _ = next.run(req).await;
            }
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let msg = if code == 503 {
                "The service is unavailable or down for maintenance."
            } else {
                "Internal server error."
            };
            let mut r = api::error(&state, status, format, msg);
            if let Some(v) = retry_after.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        FaultKind::Drop { after } => {
            if after {
                let _ = next.run(req).await;
            }
            dropped()
        }
        FaultKind::Elsewhere => oauth::user_lives_elsewhere(&state),
        FaultKind::Error200 => api::error(
            &state,
            StatusCode::OK,
            format,
            "An error occurred while processing the request.",
        ),
        FaultKind::XmlDespiteJson => {
            req.headers_mut()
                .insert(header::ACCEPT, HeaderValue::from_static("application/xml"));
            next.run(req).await
        }
        FaultKind::Poison => {
            let resp = next.run(req).await;
            let (mut parts, body) = resp.into_parts();
            let bytes = axum::body::to_bytes(body, 4 << 20)
                .await
                .unwrap_or_default();
            let Ok(mut page) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                return Response::from_parts(parts, Body::from(bytes));
            };
            if let Some(items) = page.get_mut("Items").and_then(|i| i.as_array_mut()) {
                if let Some(first) = items.first_mut().and_then(|f| f.as_object_mut()) {
                    first.insert("status".into(), "Waiting".into());
                    first.insert("lastModified".into(), "yesterday".into());
                }
                items.insert(
                    0,
                    serde_json::json!({"ID": "poison-malformed", "lastName": {"unexpected": "object"}}),
                );
                items.insert(
                    1,
                    serde_json::json!({"lastName": "NoId", "requestToken": "x"}),
                );
            }
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(page.to_string()))
        }
        FaultKind::MalformedJson => {
            let resp = next.run(req).await;
            let (mut parts, body) = resp.into_parts();
            let bytes = axum::body::to_bytes(body, 4 << 20)
                .await
                .unwrap_or_default();
            let mut cut = bytes.slice(..bytes.len() * 3 / 5).to_vec();
            cut.extend_from_slice(b"{\"Items\":[{\"ID\":");
            if parts.status == StatusCode::NO_CONTENT {
                parts.status = StatusCode::OK;
            }
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            Response::from_parts(parts, Body::from(cut))
        }
        FaultKind::SlowBody { ms } => {
            let resp = next.run(req).await;
            let (mut parts, body) = resp.into_parts();
            let bytes = axum::body::to_bytes(body, 4 << 20)
                .await
                .unwrap_or_default();
            parts.headers.remove(header::CONTENT_LENGTH);
            let chunks: Vec<Bytes> = if bytes.is_empty() {
                Vec::new()
            } else {
                let n = 8usize.min(bytes.len());
                let size = bytes.len().div_ceil(n);
                (0..n)
                    .map(|i| {
                        bytes.slice((i * size).min(bytes.len())..((i + 1) * size).min(bytes.len()))
                    })
                    .collect()
            };
            let pause = StdDuration::from_millis(ms / (chunks.len().max(1) as u64));
            let s = stream::unfold(chunks.into_iter(), move |mut it| async move {
                let c = it.next()?;
                tokio::time::sleep(pause).await;
                Some((Ok::<Bytes, std::io::Error>(c), it))
            });
            Response::from_parts(parts, Body::from_stream(s))
        }
    }
}

async fn log_layer(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let correlation = uuid::Uuid::new_v4().to_string();
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&correlation) {
        resp.headers_mut().insert("concur-correlationid", v);
    }
    tracing::info!(
        %method,
        %path,
        status = resp.status().as_u16(),
        latency_ms = started.elapsed().as_millis() as u64,
        correlation_id = %correlation,
        "call"
    );
    resp
}

/// Plain-text 405 helper shared by the handlers.
pub(crate) fn method_not_allowed(allow: &'static str) -> Response {
    let mut r = (StatusCode::METHOD_NOT_ALLOWED, "").into_response();
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}
