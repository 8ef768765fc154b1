//! The poller binary's cold start, under a stub of Lambda's Runtime API: a
//! configuration error reaches `/runtime/init/error` with its type and message.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn a_legacy_api_version_is_refused_at_cold_start_through_the_runtime_api() {
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/2018-06-01/runtime/init/error"))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&api)
        .await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_poller"))
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", api.address().to_string())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_LAMBDA_FUNCTION_NAME", "poller")
        .env("CONCUR_API_BASE_URL", "https://us.api.concursolutions.com")
        .env("CONCUR_CLIENT_SECRET_SOURCE", "ssm:/triplink/concur")
        .env("REQUESTS_TABLE", "requests")
        .env("CONCUR_API_VERSION", "3.1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the poller binary starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().ok();
            panic!("the poller did not exit after a configuration error");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    let received = api.received_requests().await.unwrap();
    assert_eq!(
        received.len(),
        1,
        "only the init error, no invocation asked for"
    );
    let body: Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(body["errorType"], "Config.Invalid");
    let message = body["errorMessage"].as_str().unwrap();
    assert!(
        message.starts_with(r#"CONCUR_API_VERSION="3.1" is invalid"#) && message.contains("v3.2"),
        "{message}"
    );
}
