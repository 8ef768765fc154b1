//! The worker binary's cold start, under a stub of Lambda's Runtime API: a
//! configuration error reaches `/runtime/init/error` with its type and message, and the
//! process ends without asking for an invocation.

use std::path::Path;

use triplink_shared::testing::{self, ColdStart};

/// Run the debug `worker` binary with only `vars` set (see `testing::cold_start`).
async fn cold_start(vars: &[(&str, &str)]) -> (Vec<(String, serde_json::Value)>, usize) {
    let ColdStart {
        init_errors, nexts, ..
    } = testing::cold_start(Path::new(env!("CARGO_BIN_EXE_worker")), vars).await;
    (init_errors, nexts)
}

const DEPLOYED: [(&str, &str); 6] = [
    ("CONCUR_API_BASE_URL", "https://us.api.concursolutions.com"),
    (
        "CONCUR_CLIENT_SECRET_SOURCE",
        "secretsmanager:arn:aws:secretsmanager:us-east-1:123456789012:secret:concur",
    ),
    ("REQUESTS_TABLE", "requests"),
    ("CONNECTIONS_TABLE", "connections"),
    ("KMS_KEY_ID", "key-id"),
    ("MEMBERS_TABLE", "members"),
];

#[tokio::test]
async fn a_legacy_api_version_is_refused_at_cold_start_through_the_runtime_api() {
    let mut vars = DEPLOYED.to_vec();
    vars.push(("CONCUR_API_VERSION", "3.0"));
    let (reports, nexts) = cold_start(&vars).await;
    assert_eq!(reports.len(), 1, "{reports:?}");
    let (header, body) = &reports[0];
    assert_eq!(header, "Config.Invalid");
    assert_eq!(body["errorType"], "Config.Invalid");
    let message = body["errorMessage"].as_str().unwrap();
    assert!(
        message.starts_with(r#"CONCUR_API_VERSION="3.0" is invalid"#),
        "{message}"
    );
    assert!(
        message.contains("no userId") && message.contains("CONCUR_API_VERSION=3.2"),
        "{message}"
    );
    assert_eq!(nexts, 0, "no invocation is asked for");
}

#[tokio::test]
async fn any_configuration_error_is_reported_the_same_way() {
    // A variable the template sets is missing.
    let vars: Vec<_> = DEPLOYED
        .iter()
        .copied()
        .filter(|(k, _)| *k != "KMS_KEY_ID")
        .collect();
    let (reports, _) = cold_start(&vars).await;
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].1["errorType"], "Config.Missing");
    assert_eq!(reports[0].1["errorMessage"], "KMS_KEY_ID is not set");

    // A plain-environment secret in a deployed function.
    let mut vars = DEPLOYED.to_vec();
    vars.retain(|(k, _)| *k != "CONCUR_CLIENT_SECRET_SOURCE");
    vars.push(("CONCUR_CLIENT_SECRET_SOURCE", "env:CONCUR_CLIENT_SECRET"));
    vars.push(("CONCUR_CLIENT_SECRET", "must-not-be-echoed"));
    let (reports, _) = cold_start(&vars).await;
    assert_eq!(reports[0].1["errorType"], "Config.Invalid");
    let message = reports[0].1["errorMessage"].as_str().unwrap();
    assert!(message.contains("local runs only"), "{message}");
    assert!(!message.contains("must-not-be-echoed"), "{message}");
}
