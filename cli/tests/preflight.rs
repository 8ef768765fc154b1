//! `triplink preflight` against moto (DynamoDB, KMS) and the Concur sandbox.

mod common;

use std::collections::HashMap;
use std::process::Command;

use chrono::Utc;
use common::*;
use serde_json::Value;
use triplink_cli::output::{format_report, OutputFormat};
use triplink_cli::preflight::{preflight, PreflightReport, Targets};
use triplink_shared::members::DynamoMemberDirectory;
use triplink_shared::store::tables;
use triplink_shared::testing;

struct Setup {
    requests: String,
    members: String,
    connections: String,
    kms_key: String,
    sandbox: concur_sandbox::Sandbox,
}

/// Tables, a KMS key and a sandbox; the members table holds a manifest of `members`
/// members (none when `None`).
async fn setup(members: Option<u64>) -> Setup {
    let dynamo = dynamo();
    let (requests, _) = requests_table().await;
    let members_table = testing::unique_name("cli-members");
    tables::create_members_table(&dynamo, &members_table)
        .await
        .unwrap();
    if let Some(count) = members {
        DynamoMemberDirectory::new(dynamo.clone(), members_table.clone())
            .write_manifest(count, Utc::now())
            .await
            .unwrap();
    }
    let connections = testing::unique_name("cli-connections");
    tables::create_connections_table(&dynamo, &connections)
        .await
        .unwrap();
    Setup {
        requests,
        members: members_table,
        connections,
        kms_key: testing::kms_key().await,
        sandbox: concur_sandbox::spawn(concur_sandbox::Config::for_tests())
            .await
            .unwrap(),
    }
}

impl Setup {
    fn targets(&self) -> Targets<'_> {
        Targets {
            requests_table: &self.requests,
            members_table: &self.members,
            connections_table: Some(&self.connections),
            kms_key_id: Some(&self.kms_key),
        }
    }

    fn env(&self) -> HashMap<String, String> {
        concur_env(&self.sandbox.local_url)
    }
}

fn check<'a>(report: &'a PreflightReport, name: &str) -> &'a triplink_cli::preflight::Check {
    report
        .checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:?}"))
}

const CHECKS: [&str; 8] = [
    "requests table",
    "members table",
    "connections table",
    "member directory",
    "kms key",
    "concur configuration",
    "concur app token",
    "concur connection requests",
];

#[tokio::test]
async fn everything_in_place_passes_every_check() {
    let setup = setup(Some(12)).await;
    let report = preflight(&testing::sdk_config(), &setup.targets(), &setup.env()).await;
    let names: Vec<_> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, CHECKS);
    assert!(report.ok, "{report:?}");
    assert!(report.checks.iter().all(|c| c.ok), "{report:?}");
    assert!(check(&report, "member directory")
        .detail
        .contains("12 members"));
    assert!(check(&report, "concur connection requests")
        .detail
        .contains("limit 1"));

    let text = format_report(&report, OutputFormat::Table);
    let ok_lines = text
        .lines()
        .filter(|l| l.split("  ").any(|cell| cell.trim() == "ok"))
        .count();
    assert_eq!(ok_lines, 8, "{text}");
    assert!(!text.contains("FAILED"), "{text}");
    assert!(text.contains("may be enabled"), "{text}");
    assert!(
        !text.contains("sandbox-secret"),
        "the secret is shown: {text}"
    );
    let json: Value = serde_json::from_str(&format_report(&report, OutputFormat::Json)).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["checks"].as_array().unwrap().len(), 8);
}

#[tokio::test]
async fn an_empty_members_table_fails_the_directory_check_and_the_command() {
    let setup = setup(None).await;
    let report = preflight(&testing::sdk_config(), &setup.targets(), &setup.env()).await;
    assert!(!report.ok);
    let directory = check(&report, "member directory");
    assert!(!directory.ok);
    assert!(directory.detail.contains("no_manifest"), "{directory:?}");
    assert!(directory.detail.contains("members import"), "{directory:?}");
    for name in CHECKS.iter().filter(|n| **n != "member directory") {
        assert!(check(&report, name).ok, "{name}: {report:?}");
    }

    // The built binary: one FAILED line, a non-zero exit.
    // Run off the test's runtime thread: the sandbox is served by this runtime.
    let endpoint = testing::moto().endpoint.clone();
    let mut command = Command::new(env!("CARGO_BIN_EXE_triplink"));
    command
        .args([
            "preflight",
            "--endpoint-url",
            &endpoint,
            "--requests-table",
            &setup.requests,
            "--members-table",
            &setup.members,
            "--connections-table",
            &setup.connections,
            "--kms-key-id",
            &setup.kms_key,
        ])
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("DRY_RUN")
        .envs(setup.env());
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let failed: Vec<_> = stdout.lines().filter(|l| l.contains("FAILED")).collect();
    assert_eq!(
        failed.len(),
        2,
        "the directory line and the summary: {stdout}"
    );
    assert!(failed[0].starts_with("member directory"), "{stdout}");
    assert!(stdout.contains("do not enable"), "{stdout}");

    // An empty manifest fails too; so do a missing table, no connections table, no key.
    DynamoMemberDirectory::new(dynamo(), setup.members.clone())
        .write_manifest(0, Utc::now())
        .await
        .unwrap();
    let targets = Targets {
        requests_table: "no-such-requests-table",
        connections_table: None,
        kms_key_id: None,
        ..setup.targets()
    };
    let report = preflight(&testing::sdk_config(), &targets, &setup.env()).await;
    assert!(!report.ok);
    let detail = |name| check(&report, name).detail.clone();
    assert!(detail("member directory").contains("empty"));
    for name in [
        "requests table",
        "connections table",
        "kms key",
        "member directory",
    ] {
        assert!(!check(&report, name).ok, "{name}: {report:?}");
    }
    assert!(detail("connections table").contains("CONNECTIONS_TABLE"));
    assert!(detail("kms key").contains("KMS_KEY_ID"));
    assert!(check(&report, "members table").ok);
}

#[tokio::test]
async fn a_wrong_client_secret_fails_the_concur_check() {
    let setup = setup(Some(3)).await;
    let mut env = setup.env();
    env.insert("TEST_CONCUR_SECRET".into(), "not-the-secret".into());
    let report = preflight(&testing::sdk_config(), &setup.targets(), &env).await;
    assert!(!report.ok);
    let token = check(&report, "concur app token");
    assert!(!token.ok, "{report:?}");
    assert!(!token.detail.contains("not-the-secret"), "{token:?}");
    assert!(check(&report, "concur configuration").ok);
    assert!(
        !report
            .checks
            .iter()
            .any(|c| c.name == "concur connection requests"),
        "no page is read without a token: {report:?}"
    );
    for name in &CHECKS[..5] {
        assert!(check(&report, name).ok, "{name}: {report:?}");
    }
    let text = format_report(&report, OutputFormat::Table);
    assert!(
        text.contains("concur app token") && text.contains("FAILED"),
        "{text}"
    );

    // No Concur configuration at all: one failed line naming the missing setting.
    let report = preflight(&testing::sdk_config(), &setup.targets(), &no_concur()).await;
    let config = check(&report, "concur configuration");
    assert!(!config.ok);
    assert!(config.detail.contains("CONCUR_API_BASE_URL"), "{config:?}");
}

#[tokio::test]
async fn the_http_member_service_is_checked_when_the_worker_uses_it() {
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    // The members table has no manifest: only the member service is asked.
    let setup = setup(None).await;
    let service = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/health"))
        .and(header("x-api-key", "member-service-key"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"status": "ok", "members": 7})),
        )
        .mount(&service)
        .await;
    Mock::given(method("GET"))
        .and(path("/health"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&service)
        .await;
    let mut env = setup.env();
    for (key, value) in [
        ("MEMBER_DIRECTORY", "http"),
        ("MEMBER_SERVICE_URL", service.uri().as_str()),
        ("MEMBER_SERVICE_AUTH_HEADER", "x-api-key"),
        ("MEMBER_SERVICE_AUTH_SOURCE", "env:TEST_MEMBER_KEY"),
        ("TEST_MEMBER_KEY", "member-service-key"),
    ] {
        env.insert(key.into(), value.into());
    }
    let report = preflight(&testing::sdk_config(), &setup.targets(), &env).await;
    assert!(report.ok, "{report:?}");
    let directory = check(&report, "member directory");
    assert!(
        directory.detail.contains("ready: 7 members"),
        "{directory:?}"
    );
    assert!(directory.detail.contains(&service.uri()), "{directory:?}");
    let text = format_report(&report, OutputFormat::Json);
    assert!(!text.contains("member-service-key"), "{text}");

    // A wrong key: the service refuses, the check fails.
    env.insert("TEST_MEMBER_KEY".into(), "wrong".into());
    let report = preflight(&testing::sdk_config(), &setup.targets(), &env).await;
    let directory = check(&report, "member directory");
    assert!(!directory.ok && !report.ok, "{report:?}");
    assert!(directory.detail.contains("unreachable"), "{directory:?}");

    // A directory kind the worker does not know.
    env.insert("MEMBER_DIRECTORY".into(), "ldap".into());
    let report = preflight(&testing::sdk_config(), &setup.targets(), &env).await;
    let directory = check(&report, "member directory");
    assert!(!directory.ok, "{report:?}");
    assert!(directory.detail.contains("configuration"), "{directory:?}");
}
