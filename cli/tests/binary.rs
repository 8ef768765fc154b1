//! The built `triplink` binary: help, JSON output against moto, one-line errors.

mod common;

use std::process::{Command, Output};

use chrono::{Duration, Utc};
use common::*;
use serde_json::Value;
use triplink_shared::model::ConnectionStatus;
use triplink_shared::store::layout::RequestState;
use triplink_shared::testing;

fn triplink(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_triplink"))
        .args(args)
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("REQUESTS_TABLE")
        .env_remove("MEMBERS_TABLE")
        .env_remove("CONCUR_API_BASE_URL")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_command_has_help() {
    let out = triplink(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for command in [
        "status",
        "show",
        "retry",
        "dry-run",
        "preflight",
        "dlq",
        "members",
    ] {
        assert!(help.contains(command), "{command} missing from {help}");
    }
    for option in [
        "--endpoint-url",
        "--region",
        "--requests-table",
        "--members-table",
        "--output",
    ] {
        assert!(help.contains(option), "{option} missing from {help}");
    }
    for args in [
        &["status", "--help"][..],
        &["show", "--help"],
        &["retry", "--help"],
        &["dry-run", "list", "--help"],
        &["preflight", "--help"],
        &["dlq", "redrive", "--help"],
        &["members", "import", "--help"],
    ] {
        let out = triplink(args);
        assert!(out.status.success(), "{args:?}");
        assert!(text(&out.stdout).contains("Usage: triplink"), "{args:?}");
    }
    assert!(text(&triplink(&["members", "import", "--help"]).stdout).contains("--dry-run"));
    let retry_help = text(&triplink(&["retry", "--help"]).stdout);
    for option in ["--force", "--all-parked", "--reason", "--max"] {
        assert!(
            retry_help.contains(option),
            "{option} missing from {retry_help}"
        );
    }
    assert!(text(&triplink(&["preflight", "--help"]).stdout).contains("--kms-key-id"));
    // retry needs an id or --all-parked, not both; --reason takes a known reason only.
    for args in [
        &["retry"][..],
        &["retry", "r-1", "--all-parked"],
        &["retry", "r-1", "--reason", "dry_run"],
        &["retry", "r-1", "--max", "3"],
        &["retry", "--reason", "dry_run"],
        &["retry", "--all-parked", "--reason", "no_such_reason"],
    ] {
        let out = triplink(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[tokio::test]
async fn status_prints_json_from_a_local_endpoint_and_errors_are_one_line() {
    let (table, store) = requests_table().await;
    let now = Utc::now();
    put(&store, &item("b-1", RequestState::Received, 1, now)).await;
    put(&store, &working("b-2", now - Duration::minutes(1), now)).await;
    put(
        &store,
        &reported("b-3", 2, ConnectionStatus::AccountNotFound, now),
    )
    .await;
    let endpoint = testing::moto().endpoint.clone();

    let out = triplink(&[
        "status",
        "--output",
        "json",
        "--endpoint-url",
        &endpoint,
        "--requests-table",
        &table,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["total"], 3);
    assert_eq!(json["by_state"]["received"], 1);
    assert_eq!(json["by_outcome"]["CREU1"], 1);
    assert_eq!(json["requeued"], 1);
    assert_eq!(json["stuck"]["working_expired_lease"], 1);
    // No members table by that name on moto: the directory is reported, not an error.
    assert_eq!(json["directory"]["ready"], false);
    assert_eq!(json["directory"]["not_ready"], "unreachable");

    let out = triplink(&[
        "show",
        "b-1",
        "--endpoint-url",
        &endpoint,
        "--requests-table",
        &table,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("[REDACTED]") && !shown.contains("tok-SECRET"),
        "{shown}"
    );

    let out = triplink(&[
        "show",
        "nope",
        "--endpoint-url",
        &endpoint,
        "--requests-table",
        &table,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let error = text(&out.stderr);
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(
        error.starts_with("triplink: error: request nope is not in the requests table"),
        "{error}"
    );

    let out = triplink(&[
        "retry",
        "b-2",
        "--output",
        "json",
        "--endpoint-url",
        &endpoint,
        "--requests-table",
        &table,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["action"], "rearmed");

    let out = triplink(&[
        "retry",
        "--all-parked",
        "--reason",
        "dry_run",
        "--output",
        "json",
        "--endpoint-url",
        &endpoint,
        "--requests-table",
        &table,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (json["found"].as_u64(), json["rearmed"].as_u64()),
        (Some(0), Some(0))
    );

    let out = triplink(&[
        "dry-run",
        "--output",
        "json",
        "--endpoint-url",
        &endpoint,
        "--requests-table",
        &table,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["total"], 0);

    // --parked is --all-parked.
    let out = triplink(&[
        "retry",
        "--parked",
        "--output",
        "json",
        "--endpoint-url",
        &endpoint,
        "--requests-table",
        &table,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["found"], 0);
    assert_eq!(json["reason"], Value::Null);

    let out = triplink(&[
        "status",
        "--output",
        "json",
        "--endpoint-url",
        &endpoint,
        "--requests-table",
        "no-such-table",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        json["error"].as_str().unwrap().contains("no-such-table"),
        "{json}"
    );

    let out = triplink(&["status", "--endpoint-url", "not a url"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--endpoint-url"),
        "{}",
        text(&out.stderr)
    );
}
