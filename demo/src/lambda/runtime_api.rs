//! The Lambda Runtime API of one execution environment, as a local HTTP server on
//! `127.0.0.1:0`: what a custom runtime (`provided.al2023`, here the `lambda_runtime`
//! crate in the functions' `bootstrap`) talks to through `AWS_LAMBDA_RUNTIME_API`.
//!
//! * `GET /2018-06-01/runtime/invocation/next` long-polls until an invocation is queued,
//!   then answers `200` with the event as body and the headers
//!   `Lambda-Runtime-Aws-Request-Id`, `Lambda-Runtime-Deadline-Ms` (epoch ms, set when
//!   the event is handed out: now + the function's timeout),
//!   `Lambda-Runtime-Invoked-Function-Arn` and `Lambda-Runtime-Trace-Id`.
//! * `POST /2018-06-01/runtime/invocation/{id}/response` → `202 {"status":"OK"}`; a
//!   response over 6 MB → `413`; an id that is not the invocation in progress → `400`.
//! * `POST /2018-06-01/runtime/invocation/{id}/error` → `202`; the body is the runtime's
//!   `{"errorType", "errorMessage"}`, the header `Lambda-Runtime-Function-Error-Type`.
//! * `POST /2018-06-01/runtime/init/error` → `202`: the initialisation failed.
//!
//! The server only moves messages: what they mean (success, function error, crash,
//! timeout) is decided by the environment that owns it (`process.rs`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The largest synchronous response Lambda accepts (its error message names this size).
pub const MAX_RESPONSE_BYTES: usize = 6_291_556;

/// An invocation waiting for the runtime's `next` call.
#[derive(Debug, Clone)]
pub struct QueuedInvocation {
    pub request_id: String,
    pub payload: Bytes,
    pub timeout: Duration,
    pub invoked_function_arn: String,
    pub trace_id: String,
}

/// What the runtime did, in the order it did it.
#[derive(Debug, Clone, PartialEq)]
pub enum RuntimeEvent {
    /// The runtime took the invocation; its deadline (epoch ms) was sent with it.
    Delivered {
        request_id: String,
        deadline_ms: u64,
    },
    Response {
        request_id: String,
        body: Bytes,
    },
    /// A response larger than Lambda accepts (answered 413).
    ResponseTooLarge {
        request_id: String,
        bytes: usize,
    },
    Error {
        request_id: String,
        error_type: String,
        error_message: String,
    },
    InitError {
        error_type: String,
        error_message: String,
    },
    /// A call the Runtime API refused (unknown request id, ...): a runtime bug.
    Refused {
        path: String,
        reason: String,
    },
}

struct ApiState {
    queue: tokio::sync::Mutex<mpsc::Receiver<QueuedInvocation>>,
    current: Mutex<Option<String>>,
    events: mpsc::UnboundedSender<RuntimeEvent>,
}

impl ApiState {
    fn current(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        match self.current.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn take_current(&self, request_id: &str) -> bool {
        let mut current = self.current();
        if current.as_deref() == Some(request_id) {
            *current = None;
            true
        } else {
            false
        }
    }
}

fn epoch_ms() -> u64 {
    chrono::Utc::now().timestamp_millis().max(0) as u64
}

fn header(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn api_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"errorMessage": message, "errorType": error_type})),
    )
        .into_response()
}

async fn next(State(state): State<Arc<ApiState>>) -> Response {
    let invocation = {
        let mut queue = state.queue.lock().await;
        queue.recv().await
    };
    let Some(invocation) = invocation else {
        // The environment is being shut down: the runtime waits until it is killed.
        return std::future::pending().await;
    };
    let deadline_ms = epoch_ms() + invocation.timeout.as_millis() as u64;
    {
        let mut current = state.current();
        if let Some(previous) = current.replace(invocation.request_id.clone()) {
            let _ = state.events.send(RuntimeEvent::Refused {
                path: "/2018-06-01/runtime/invocation/next".into(),
                reason: format!("next called while {previous} was unanswered"),
            });
        }
    }
    let _ = state.events.send(RuntimeEvent::Delivered {
        request_id: invocation.request_id.clone(),
        deadline_ms,
    });
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert(
        "lambda-runtime-aws-request-id",
        header(&invocation.request_id),
    );
    headers.insert(
        "lambda-runtime-deadline-ms",
        header(&deadline_ms.to_string()),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        header(&invocation.invoked_function_arn),
    );
    headers.insert("lambda-runtime-trace-id", header(&invocation.trace_id));
    (StatusCode::OK, headers, invocation.payload).into_response()
}

async fn response(
    State(state): State<Arc<ApiState>>,
    Path(request_id): Path<String>,
    body: Bytes,
) -> Response {
    if !state.take_current(&request_id) {
        let _ = state.events.send(RuntimeEvent::Refused {
            path: format!("/2018-06-01/runtime/invocation/{request_id}/response"),
            reason: "not the invocation in progress".into(),
        });
        return api_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            "Invalid request ID",
        );
    }
    if body.len() > MAX_RESPONSE_BYTES {
        let _ = state.events.send(RuntimeEvent::ResponseTooLarge {
            request_id,
            bytes: body.len(),
        });
        return api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "Response payload size exceeded maximum allowed payload size (6291556 bytes).",
        );
    }
    let _ = state
        .events
        .send(RuntimeEvent::Response { request_id, body });
    (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"}))).into_response()
}

fn diagnostic(headers: &HeaderMap, body: &Bytes) -> (String, String) {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let error_type = parsed
        .get("errorType")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            headers
                .get("lambda-runtime-function-error-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "Unhandled".into());
    let error_message = parsed
        .get("errorMessage")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    (error_type, error_message)
}

async fn error(
    State(state): State<Arc<ApiState>>,
    Path(request_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !state.take_current(&request_id) {
        let _ = state.events.send(RuntimeEvent::Refused {
            path: format!("/2018-06-01/runtime/invocation/{request_id}/error"),
            reason: "not the invocation in progress".into(),
        });
        return api_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            "Invalid request ID",
        );
    }
    let (error_type, error_message) = diagnostic(&headers, &body);
    let _ = state.events.send(RuntimeEvent::Error {
        request_id,
        error_type,
        error_message,
    });
    (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"}))).into_response()
}

async fn init_error(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (error_type, error_message) = diagnostic(&headers, &body);
    let _ = state.events.send(RuntimeEvent::InitError {
        error_type,
        error_message,
    });
    (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"}))).into_response()
}

async fn unknown() -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        "unknown Runtime API path",
    )
}

/// A running Runtime API: hand it invocations, read what the runtime did.
pub struct RuntimeApi {
    pub addr: SocketAddr,
    queue: mpsc::Sender<QueuedInvocation>,
    events: mpsc::UnboundedReceiver<RuntimeEvent>,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

impl RuntimeApi {
    /// Listen on a free loopback port.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (queue_tx, queue_rx) = mpsc::channel(1);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let state = Arc::new(ApiState {
            queue: tokio::sync::Mutex::new(queue_rx),
            current: Mutex::new(None),
            events: events_tx,
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .fallback(unknown)
            // Bodies are checked against Lambda's own limit above, not axum's 2 MB.
            .layer(DefaultBodyLimit::max(MAX_RESPONSE_BYTES * 2))
            .with_state(state);
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = shutdown_rx.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            queue: queue_tx,
            events: events_rx,
            shutdown: Some(shutdown_tx),
            server,
        })
    }

    /// `AWS_LAMBDA_RUNTIME_API`: `host:port`.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Queue an invocation for the runtime's next `next` call.
    pub async fn queue(&self, invocation: QueuedInvocation) -> Result<(), String> {
        self.queue
            .send(invocation)
            .await
            .map_err(|_| "the Runtime API is closed".to_owned())
    }

    /// The next thing the runtime did.
    pub async fn event(&mut self) -> Option<RuntimeEvent> {
        self.events.recv().await
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // Long polls never end by themselves: stop the server outright.
        self.server.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Runtime API with a plain HTTP client, the calls `lambda_runtime` makes.
    #[tokio::test]
    async fn next_response_error_and_init_error() {
        let mut api = RuntimeApi::start().await.unwrap();
        let base = format!("http://{}/2018-06-01/runtime", api.endpoint());
        let client = triplink_shared::testing::http_client();
        api.queue(QueuedInvocation {
            request_id: "r1".into(),
            payload: Bytes::from_static(b"{\"a\":1}"),
            timeout: Duration::from_secs(3),
            invoked_function_arn: "arn:aws:lambda:us-east-1:1:function:f".into(),
            trace_id: "Root=1-0-0;Sampled=0".into(),
        })
        .await
        .unwrap();
        let before = epoch_ms();
        let next = client
            .get(format!("{base}/invocation/next"))
            .send()
            .await
            .unwrap();
        assert_eq!(next.status(), 200);
        let h = next.headers().clone();
        assert_eq!(h["lambda-runtime-aws-request-id"], "r1");
        assert_eq!(
            h["lambda-runtime-invoked-function-arn"],
            "arn:aws:lambda:us-east-1:1:function:f"
        );
        assert_eq!(h["lambda-runtime-trace-id"], "Root=1-0-0;Sampled=0");
        let deadline: u64 = h["lambda-runtime-deadline-ms"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(deadline >= before + 3000 && deadline <= epoch_ms() + 3000);
        assert_eq!(next.text().await.unwrap(), "{\"a\":1}");
        assert!(matches!(
            api.event().await,
            Some(RuntimeEvent::Delivered { request_id, .. }) if request_id == "r1"
        ));

        let wrong = client
            .post(format!("{base}/invocation/r2/response"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 400);
        assert!(matches!(
            api.event().await,
            Some(RuntimeEvent::Refused { .. })
        ));
        let ok = client
            .post(format!("{base}/invocation/r1/response"))
            .body("{\"ok\":true}")
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 202);
        assert_eq!(
            api.event().await,
            Some(RuntimeEvent::Response {
                request_id: "r1".into(),
                body: Bytes::from_static(b"{\"ok\":true}")
            })
        );
        let again = client
            .post(format!("{base}/invocation/r1/error"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 400, "an answered invocation is closed");
        let _ = api.event().await;

        let init = client
            .post(format!("{base}/init/error"))
            .header("lambda-runtime-function-error-type", "Runtime.InitError")
            .body("{\"errorType\":\"Boom\",\"errorMessage\":\"bad config\"}")
            .send()
            .await
            .unwrap();
        assert_eq!(init.status(), 202);
        assert_eq!(
            api.event().await,
            Some(RuntimeEvent::InitError {
                error_type: "Boom".into(),
                error_message: "bad config".into()
            })
        );
    }
}
