//! The poller binary's cold start, under a stub of Lambda's Runtime API: a
//! configuration error reaches `/runtime/init/error` with its type and message.

use std::path::Path;

use triplink_shared::testing;

#[tokio::test]
async fn a_legacy_api_version_is_refused_at_cold_start_through_the_runtime_api() {
    let cold = testing::cold_start(
        Path::new(env!("CARGO_BIN_EXE_poller")),
        &[
            ("CONCUR_API_BASE_URL", "https://us.api.concursolutions.com"),
            ("CONCUR_CLIENT_SECRET_SOURCE", "ssm:/triplink/concur"),
            ("REQUESTS_TABLE", "requests"),
            ("CONCUR_API_VERSION", "3.1"),
        ],
    )
    .await;
    assert_eq!(cold.init_errors.len(), 1, "{cold:?}");
    assert_eq!(
        cold.requests, 1,
        "only the init error, no invocation asked for"
    );
    let (header, body) = &cold.init_errors[0];
    assert_eq!(header, "Config.Invalid");
    assert_eq!(body["errorType"], "Config.Invalid");
    let message = body["errorMessage"].as_str().unwrap();
    assert!(
        message.starts_with(r#"CONCUR_API_VERSION="3.1" is invalid"#) && message.contains("v3.2"),
        "{message}"
    );
}
