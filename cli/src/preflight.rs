//! `triplink preflight`: every check that must pass before the poller's schedule is
//! enabled. One line per check; the command fails if any check fails.
//!
//! * the requests, members and connections tables exist and are reachable
//!   (DescribeTable, status ACTIVE);
//! * the member directory is ready: a manifest counting at least one member (the rule
//!   the worker applies before any `CREU*`, `triplink_shared::members::health`), for the
//!   directory the worker is configured with (`MEMBER_DIRECTORY`: the members table, or
//!   the HTTP member service's `/health`);
//! * the KMS key works: an Encrypt and Decrypt round trip of a throw-away value through
//!   the vault's encryptor, with the vault's encryption context;
//! * Concur: the configuration the functions use is complete (v3.2), the client secret
//!   can be read, the app token is granted (client-credentials grant), and one page of
//!   connection requests (limit 1) can be read. Read-only: nothing is ever sent.
//!
//! Nothing secret or personal is printed: not the token, not the secret, not the page's
//! requests (only how many the page held).

use std::time::Duration;

use aws_config::SdkConfig;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use triplink_shared::config::{ConcurSettings, Env, SecretSource};
use triplink_shared::vault::{Encryptor, KmsEncryptor};

use crate::output::{Render, Table};
use crate::status::DirectoryReport;

/// How long the Concur check may take in all.
pub const CONCUR_CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// The encryption context's member id of the KMS round trip (no real member).
pub const KMS_PROBE_MEMBER: &str = "triplink-preflight";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    /// What was found, or why it failed.
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PreflightReport {
    /// Every check passed: the schedule may be enabled.
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl PreflightReport {
    fn push(&mut self, name: impl Into<String>, result: Result<String, String>) {
        let (ok, detail) = match result {
            Ok(detail) => (true, detail),
            Err(detail) => (false, detail),
        };
        self.checks.push(Check {
            name: name.into(),
            ok,
            detail,
        });
        self.ok = self.checks.iter().all(|c| c.ok);
    }
}

impl Render for PreflightReport {
    fn render(&self) -> String {
        let mut table = Table::new(["check", "result", ""]);
        for check in &self.checks {
            table.row([
                check.name.clone(),
                if check.ok { "ok" } else { "FAILED" }.to_owned(),
                check.detail.clone(),
            ]);
        }
        let mut out = table.render();
        out.push('\n');
        out.push_str(if self.ok {
            "All checks passed: the poller's schedule may be enabled.\n"
        } else {
            "Some checks FAILED: do not enable the poller's schedule yet.\n"
        });
        out
    }
}

/// What preflight checks.
pub struct Targets<'a> {
    pub requests_table: &'a str,
    pub members_table: &'a str,
    pub connections_table: Option<&'a str>,
    pub kms_key_id: Option<&'a str>,
}

async fn table_check(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<String, String> {
    let output = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| crate::aws::describe(&e))?;
    let status = output
        .table
        .and_then(|t| t.table_status)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|| "unknown".into());
    if status == "ACTIVE" {
        Ok(format!("{table}: ACTIVE"))
    } else {
        Err(format!("{table}: status {status} (expected ACTIVE)"))
    }
}

async fn kms_check(aws: &SdkConfig, key_id: Option<&str>) -> Result<String, String> {
    let key_id = key_id.ok_or("no KMS key configured (--kms-key-id or KMS_KEY_ID)")?;
    let encryptor = KmsEncryptor::new(aws_sdk_kms::Client::new(aws), key_id);
    let probe = format!("preflight-{}", chrono::Utc::now().timestamp_millis());
    let ciphertext = encryptor
        .encrypt(&SecretString::from(probe.clone()), KMS_PROBE_MEMBER)
        .await
        .map_err(|e| format!("Encrypt failed: {}", crate::aws::concise(&e.to_string())))?;
    let plain = encryptor
        .decrypt(&ciphertext, KMS_PROBE_MEMBER)
        .await
        .map_err(|e| format!("Decrypt failed: {}", crate::aws::concise(&e.to_string())))?;
    if plain.expose_secret() == probe {
        Ok(format!("{key_id}: encrypt and decrypt round trip"))
    } else {
        Err(format!(
            "{key_id}: decrypt did not return what was encrypted"
        ))
    }
}

async fn concur_checks(report: &mut PreflightReport, aws: &SdkConfig, env: &(impl Env + Sync)) {
    let settings = match ConcurSettings::for_functions(env) {
        Ok(settings) => settings,
        Err(e) => {
            report.push("concur configuration", Err(e.to_string()));
            return;
        }
    };
    let client = match settings.client(aws, env).await {
        Ok(client) => {
            report.push(
                "concur configuration",
                Ok(format!(
                    "{} (API {}), client secret read ({})",
                    settings.api_base.as_str(),
                    settings.version,
                    secret_kind(&settings.secret_source)
                )),
            );
            client
        }
        Err(e) => {
            report.push("concur configuration", Err(e.to_string()));
            return;
        }
    };
    let deadline = tokio::time::Instant::now() + CONCUR_CHECK_TIMEOUT;
    match client.app_token(deadline).await {
        Ok(_) => report.push(
            "concur app token",
            Ok("granted (client-credentials grant)".into()),
        ),
        Err(e) => {
            report.push("concur app token", Err(e.to_string()));
            return;
        }
    }
    match client.list_page(1, None, deadline).await {
        Ok(page) => report.push(
            "concur connection requests",
            Ok(format!(
                "first page read (limit 1): {} request(s){}",
                page.items.len() + page.quarantined.len(),
                if page.next_offset.is_some() {
                    ", more pending"
                } else {
                    ""
                }
            )),
        ),
        Err(e) => report.push("concur connection requests", Err(e.to_string())),
    }
}

fn secret_kind(source: &SecretSource) -> &'static str {
    match source {
        SecretSource::SecretsManager(_) => "Secrets Manager",
        SecretSource::Ssm(_) => "SSM parameter",
        SecretSource::Env(_) => "environment variable",
        SecretSource::File(_) => "file",
    }
}

/// Run every check (all of them, even after a failure).
pub async fn preflight(
    aws: &SdkConfig,
    targets: &Targets<'_>,
    env: &(impl Env + Sync),
) -> PreflightReport {
    let dynamo = aws_sdk_dynamodb::Client::new(aws);
    let mut report = PreflightReport {
        ok: true,
        checks: Vec::new(),
    };
    report.push(
        "requests table",
        table_check(&dynamo, targets.requests_table).await,
    );
    report.push(
        "members table",
        table_check(&dynamo, targets.members_table).await,
    );
    let connections = match targets.connections_table {
        Some(table) => table_check(&dynamo, table).await,
        None => {
            Err("no connections table configured (--connections-table or CONNECTIONS_TABLE)".into())
        }
    };
    report.push("connections table", connections);
    let health = DirectoryReport::configured(aws, env, targets.members_table).await;
    let line = format!("{}: {}", health.table, health.line());
    report.push(
        "member directory",
        if health.ready { Ok(line) } else { Err(line) },
    );
    report.push("kms key", kms_check(aws, targets.kms_key_id).await);
    concur_checks(&mut report, aws, env).await;
    report
}
