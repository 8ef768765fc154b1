//! `triplink tokens` (counts of the stored refresh tokens by state and age, never a
//! value) and `triplink connections revoke MEMBER` (a member unlinks).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::time::Instant;
use triplink_shared::concur::ConcurClient;
use triplink_shared::vault::{attr, Encryptor, Revoked, TokenVault, VaultError};

use crate::output::{Render, Table};
use crate::CliError;

/// How old the stored refresh tokens are (since their last refresh or connection).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct AgeCounts {
    pub under_7_days: u64,
    pub from_7_to_30_days: u64,
    pub from_30_to_90_days: u64,
    pub from_90_to_150_days: u64,
    pub over_150_days: u64,
    pub unknown: u64,
}

/// Counts only: no member id, no token, no ciphertext.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct TokensReport {
    pub table: String,
    pub at: String,
    pub total: u64,
    pub active: u64,
    /// Refused by Concur (expired or revoked): the member must connect again.
    pub expired: u64,
    /// Active tokens whose recorded expiry is within 30 days (the keep-alive is behind).
    pub expiring_within_30_days: u64,
    /// Active tokens past their recorded expiry.
    pub past_expiry: u64,
    /// A refresh holds the lease right now.
    pub refreshing_now: u64,
    /// Connections of another Concur user that a member's new connection replaced,
    /// waiting for the keep-alive to revoke them at Concur.
    pub awaiting_revoke: u64,
    pub by_age: AgeCounts,
}

fn text<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn parse_time(value: Option<&str>) -> Option<DateTime<Utc>> {
    value
        .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Count the connections table (all pages; `page_size` for tests).
pub async fn tokens_paged(
    dynamo: &aws_sdk_dynamodb::Client,
    table: &str,
    now: DateTime<Utc>,
    page_size: Option<i32>,
) -> Result<TokensReport, CliError> {
    let mut report = TokensReport {
        table: table.to_owned(),
        at: triplink_shared::store::layout::timestamp(now),
        ..TokensReport::default()
    };
    let mut start = None;
    loop {
        let output = dynamo
            .scan()
            .table_name(table)
            .set_limit(page_size)
            .projection_expression("#state, #refreshed, #connected, #expires, #until")
            .expression_attribute_names("#state", attr::TOKEN_STATE)
            .expression_attribute_names("#refreshed", attr::REFRESHED_AT)
            .expression_attribute_names("#connected", attr::CONNECTED_AT)
            .expression_attribute_names("#expires", attr::REFRESH_EXPIRES_AT)
            .expression_attribute_names("#until", attr::LEASE_UNTIL)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| {
                CliError::new(crate::aws::concise(
                    &aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string(),
                ))
            })?;
        for item in output.items.unwrap_or_default() {
            count(&mut report, &item, now);
        }
        match output.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(report),
        }
    }
}

fn count(report: &mut TokensReport, item: &HashMap<String, AttributeValue>, now: DateTime<Utc>) {
    match text(item, attr::TOKEN_STATE) {
        Some("expired") => {
            report.total += 1;
            report.expired += 1;
            return;
        }
        Some("replaced") => {
            report.awaiting_revoke += 1;
            return;
        }
        _ => report.total += 1,
    }
    report.active += 1;
    if let Some(expires) = parse_time(text(item, attr::REFRESH_EXPIRES_AT)) {
        if expires <= now {
            report.past_expiry += 1;
        } else if expires <= now + chrono::Duration::days(30) {
            report.expiring_within_30_days += 1;
        }
    }
    let leased = item
        .get(attr::LEASE_UNTIL)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse::<i64>().ok())
        .is_some_and(|until| until > now.timestamp_millis());
    if leased {
        report.refreshing_now += 1;
    }
    let since = parse_time(text(item, attr::REFRESHED_AT))
        .or_else(|| parse_time(text(item, attr::CONNECTED_AT)));
    let age = &mut report.by_age;
    match since.map(|t| (now - t).num_days()) {
        None => age.unknown += 1,
        Some(d) if d < 7 => age.under_7_days += 1,
        Some(d) if d < 30 => age.from_7_to_30_days += 1,
        Some(d) if d < 90 => age.from_30_to_90_days += 1,
        Some(d) if d < 150 => age.from_90_to_150_days += 1,
        Some(_) => age.over_150_days += 1,
    }
}

impl Render for TokensReport {
    fn render(&self) -> String {
        let mut out = format!(
            "Refresh tokens in {} at {}: {}\n\n",
            self.table, self.at, self.total
        );
        let mut states = Table::new(["state", "count"]);
        for (name, count) in [
            ("active", self.active),
            ("expired (connect again)", self.expired),
            (
                "active, expiring within 30 days",
                self.expiring_within_30_days,
            ),
            ("active, past expiry", self.past_expiry),
            ("being refreshed now", self.refreshing_now),
            ("replaced, awaiting revoke", self.awaiting_revoke),
        ] {
            states.row([name.to_owned(), count.to_string()]);
        }
        out.push_str(&states.render());
        out.push('\n');
        let mut ages = Table::new(["active, last refreshed", "count"]);
        let a = &self.by_age;
        for (name, count) in [
            ("under 7 days", a.under_7_days),
            ("7-30 days", a.from_7_to_30_days),
            ("30-90 days", a.from_30_to_90_days),
            ("90-150 days", a.from_90_to_150_days),
            ("over 150 days", a.over_150_days),
            ("unknown", a.unknown),
        ] {
            ages.row([name.to_owned(), count.to_string()]);
        }
        out.push_str(&ages.render());
        out
    }
}

/// What `connections revoke` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevokeReport {
    pub member_id: String,
    pub revoked: Revoked,
}

impl Render for RevokeReport {
    fn render(&self) -> String {
        match self.revoked {
            Revoked::AtConcurAndHere => format!(
                "Member {}: connection revoked at Concur and deleted from the vault.\n",
                self.member_id
            ),
            Revoked::HereOnly => format!(
                "Member {}: Concur had already refused the refresh token (expired or revoked); \
                 the connection was deleted from the vault.\n",
                self.member_id
            ),
        }
    }
}

/// Revoke a member's connection at Concur and delete it from the vault.
pub async fn revoke<E: Encryptor>(
    vault: &TokenVault<E>,
    concur: &ConcurClient,
    member_id: &str,
    deadline: Instant,
) -> Result<RevokeReport, CliError> {
    let owner = format!("triplink-cli-{}", std::process::id());
    match vault.revoke(concur, member_id, &owner, deadline).await {
        Ok(revoked) => Ok(RevokeReport {
            member_id: member_id.to_owned(),
            revoked,
        }),
        Err(VaultError::NotConnected(_)) => Err(CliError::new(format!(
            "member {member_id} has no Concur connection"
        ))),
        Err(e) => Err(CliError::new(format!(
            "member {member_id}: the connection was not revoked: {e}"
        ))),
    }
}
