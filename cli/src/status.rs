//! `triplink status`: counts by state and outcome, requeued, re-driven, parked,
//! quarantined and stuck requests.

use std::collections::HashMap;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use triplink_shared::config::{Env, SecretSource};
use triplink_shared::members::health::{readiness, DirectoryHealth, NotReady, Readiness};
use triplink_shared::members::{
    DirectoryError, DynamoMemberDirectory, HttpDirectoryConfig, HttpMemberDirectory,
    MemberDirectory,
};
use triplink_shared::store::layout::attr;

use crate::output::{Render, Table};
use crate::CliError;

/// A `decided` request older than this is stuck: its status should have been sent.
pub const DECIDED_STUCK_AFTER_MINUTES: i64 = 15;

/// The attributes `status` reads (no personal data is read).
#[derive(Debug, Default, Deserialize)]
pub struct Row {
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub attempt: Option<u32>,
    #[serde(default)]
    pub lease_until: Option<i64>,
    #[serde(default)]
    pub decided_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub history: Vec<HistoryRow>,
    #[serde(default)]
    pub due_at: Option<i64>,
    #[serde(default)]
    pub redrives: Option<u32>,
    #[serde(default)]
    pub parked_at: Option<String>,
    #[serde(default)]
    pub report_result: Option<String>,
    #[serde(default)]
    pub parked_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct HistoryRow {
    pub status: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    pub received: u64,
    pub working: u64,
    pub decided: u64,
    pub reported: u64,
    /// Page items that could not be read (never processed).
    pub quarantined: u64,
    /// A state this version does not know.
    pub other: u64,
}

/// By the status of each request's last reported attempt.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct OutcomeCounts {
    #[serde(rename = "CRSUC")]
    pub crsuc: u64,
    #[serde(rename = "CREU1")]
    pub creu1: u64,
    #[serde(rename = "CREU2")]
    pub creu2: u64,
    #[serde(rename = "CREU3")]
    pub creu3: u64,
    #[serde(rename = "CRRET")]
    pub crret: u64,
    /// Another status (legacy versions).
    pub other: u64,
    /// Never reported yet.
    pub none: u64,
}

/// The sweep re-arms an item at most this long after its `due_at` (a poller run or two).
pub const OVERDUE_AFTER_MINUTES: i64 = 5;

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct StuckCounts {
    /// `working` with an expired (or no) lease: the sweep re-arms it.
    pub working_expired_lease: u64,
    /// `decided` for more than 15 minutes: being re-sent, or waiting for the sweep.
    pub decided_too_long: u64,
    /// Not finished, and `due_at` passed more than 5 minutes ago (or missing): the sweep
    /// is not running, or cannot write. Stuck.
    pub overdue: u64,
    /// Left to an operator after its re-drives (alarm `requests-parked`). Stuck.
    pub parked: u64,
}

/// The life cycle's recovery, in numbers.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct RecoveryCounts {
    /// Unfinished requests the sweep has re-armed at least once.
    pub redriven: u64,
    /// Reported with a lost acknowledgement (an earlier PUT was taken).
    pub ack_lost: u64,
    /// Our first PUT found the request not outstanding (popped by someone else).
    pub not_outstanding: u64,
}

/// Parked (unfinished) requests by why they were parked
/// (`triplink_shared::store::lifecycle::ParkReason`).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ParkedCounts {
    /// The sweep's re-drives did not finish the attempt.
    pub redrives_exhausted: u64,
    /// A decision too old to be re-sent safely.
    pub decision_too_old: u64,
    /// Dry-run mode: decided, not sent (`triplink dry-run list`).
    pub dry_run: u64,
    /// Several members carry the request's loyalty number: fix the member data.
    pub duplicate_loyalty_number: u64,
    /// No reason recorded, or one this version does not know.
    pub other: u64,
}

impl ParkedCounts {
    fn add(&mut self, reason: Option<&str>) {
        match reason {
            Some("redrives_exhausted") => self.redrives_exhausted += 1,
            Some("decision_too_old") => self.decision_too_old += 1,
            Some("dry_run") => self.dry_run += 1,
            Some("duplicate_loyalty_number") => self.duplicate_loyalty_number += 1,
            _ => self.other += 1,
        }
    }
}

/// The HTTP member service as the worker builds it, and a label for it (the URL without
/// credentials or query).
async fn http_directory(
    aws: &SdkConfig,
    env: &(impl Env + Sync),
) -> Result<(String, HttpMemberDirectory), String> {
    let raw = env
        .get("MEMBER_SERVICE_URL")
        .ok_or("MEMBER_SERVICE_URL is not set")?;
    let base_url =
        url::Url::parse(raw.trim()).map_err(|e| format!("MEMBER_SERVICE_URL is not a URL: {e}"))?;
    let label = format!(
        "{}{}",
        base_url.origin().ascii_serialization(),
        base_url.path()
    );
    let auth_header = match env.get("MEMBER_SERVICE_AUTH_HEADER") {
        None => None,
        Some(name) => {
            let raw_source = env
                .get("MEMBER_SERVICE_AUTH_SOURCE")
                .ok_or("MEMBER_SERVICE_AUTH_SOURCE is not set")?;
            let source: SecretSource = raw_source
                .parse()
                .map_err(|e: String| format!("MEMBER_SERVICE_AUTH_SOURCE: {e}"))?;
            let value = source
                .fetch_checked(aws, env)
                .await
                .map_err(|e| e.to_string())?;
            Some((name, value))
        }
    };
    let timeout_ms: u64 = env
        .parsed("MEMBER_SERVICE_TIMEOUT_MS", 2000)
        .map_err(|e| e.to_string())?;
    let directory = HttpMemberDirectory::new(HttpDirectoryConfig {
        base_url,
        timeout: std::time::Duration::from_millis(timeout_ms),
        auth_header,
    })
    .map_err(|e| format!("MEMBER_SERVICE_URL: {e}"))?;
    Ok((label, directory))
}

/// The member directory's health, as the worker's gate reads it
/// (`triplink_shared::members::health`).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct DirectoryReport {
    pub table: String,
    /// The worker decides `CREU*` only when ready.
    pub ready: bool,
    /// Members counted by the manifest (absent without a manifest).
    pub members: Option<u64>,
    /// When the manifest was written.
    pub updated_at: Option<String>,
    /// Why not ready: `no_manifest`, `empty`, `unreachable` or `configuration`.
    pub not_ready: Option<String>,
    /// What to do about it.
    pub advice: Option<String>,
    /// The read error, for `unreachable`.
    pub error: Option<String>,
}

impl DirectoryReport {
    /// Apply the worker's rule to a health read of the directory in `table`.
    pub fn new(table: &str, health: Result<DirectoryHealth, DirectoryError>) -> Self {
        let readiness = readiness(&health);
        let (members, updated_at) = match &health {
            Ok(h) => (h.members, h.updated_at.clone()),
            Err(_) => (None, None),
        };
        let mut report = Self {
            table: table.to_owned(),
            ready: readiness.is_ready(),
            members,
            updated_at,
            ..Self::default()
        };
        if let Readiness::NotReady(why) = &readiness {
            report.not_ready = Some(why.as_str().to_owned());
            report.advice = Some(why.advice().to_owned());
            if let NotReady::Unreachable(e) = why {
                report.error = Some(crate::aws::concise(e));
            }
        }
        report
    }

    /// Read the health of a directory.
    pub async fn read<D: MemberDirectory>(table: &str, directory: &D) -> Self {
        Self::new(table, directory.health().await)
    }

    /// The directory the worker is configured with, read as the worker reads it:
    /// `MEMBER_DIRECTORY` `dynamodb` (the default: the members table `members_table`) or
    /// `http` (`MEMBER_SERVICE_URL`, optional `MEMBER_SERVICE_AUTH_HEADER` with its value
    /// from `MEMBER_SERVICE_AUTH_SOURCE`, `MEMBER_SERVICE_TIMEOUT_MS`). A configuration
    /// that cannot be used is reported as not ready (`configuration`).
    pub async fn configured(aws: &SdkConfig, env: &(impl Env + Sync), members_table: &str) -> Self {
        let kind = env
            .get("MEMBER_DIRECTORY")
            .unwrap_or_else(|| "dynamodb".into())
            .trim()
            .to_ascii_lowercase();
        match kind.as_str() {
            "dynamodb" => {
                let directory = DynamoMemberDirectory::new(
                    aws_sdk_dynamodb::Client::new(aws),
                    members_table.to_owned(),
                );
                Self::read(members_table, &directory).await
            }
            "http" => match http_directory(aws, env).await {
                Ok((label, directory)) => Self::read(&label, &directory).await,
                Err(message) => Self::unusable("member service", message),
            },
            other => Self::unusable(
                "member directory",
                format!("MEMBER_DIRECTORY={other:?}: expected dynamodb or http"),
            ),
        }
    }

    fn unusable(label: &str, message: String) -> Self {
        Self {
            table: label.to_owned(),
            ready: false,
            not_ready: Some("configuration".into()),
            advice: Some(
                "fix the member directory settings (MEMBER_DIRECTORY, MEMBER_SERVICE_*)".into(),
            ),
            error: Some(message),
            ..Self::default()
        }
    }

    /// One line: `ready: N members (manifest of T)` or `NOT READY (reason): advice`.
    pub fn line(&self) -> String {
        if self.ready {
            format!(
                "ready: {} members (manifest written {})",
                self.members.unwrap_or(0),
                self.updated_at.as_deref().unwrap_or("at an unknown time")
            )
        } else {
            let mut line = format!(
                "NOT READY ({}): {}",
                self.not_ready.as_deref().unwrap_or("unknown"),
                self.advice.as_deref().unwrap_or("")
            );
            if let Some(e) = &self.error {
                line.push_str(&format!(" ({e})"));
            }
            line
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    pub table: String,
    pub at: String,
    pub total: u64,
    pub by_state: StateCounts,
    pub by_outcome: OutcomeCounts,
    /// Requests on a later attempt (attempt > 1): Concur requeued them.
    pub requeued: u64,
    pub stuck: StuckCounts,
    pub recovery: RecoveryCounts,
    /// Parked requests (`stuck.parked`) by reason.
    pub parked_by_reason: ParkedCounts,
    /// The member directory's health (absent when it was not read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory: Option<DirectoryReport>,
    /// Items that could not be read.
    pub unreadable: u64,
}

fn parse_time(value: Option<&str>) -> Option<DateTime<Utc>> {
    value
        .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        .map(|t| t.with_timezone(&Utc))
}

impl StatusReport {
    pub fn new(table: &str, now: DateTime<Utc>) -> Self {
        Self {
            table: table.to_owned(),
            at: triplink_shared::store::layout::timestamp(now),
            ..Self::default()
        }
    }

    /// Count one item.
    pub fn add(&mut self, row: &Row, now: DateTime<Utc>) {
        self.total += 1;
        match row.state.as_deref() {
            Some("received") => self.by_state.received += 1,
            Some("working") => {
                self.by_state.working += 1;
                if row
                    .lease_until
                    .is_none_or(|until| until <= now.timestamp_millis())
                {
                    self.stuck.working_expired_lease += 1;
                }
            }
            Some("decided") => {
                self.by_state.decided += 1;
                let since = parse_time(row.decided_at.as_deref())
                    .or_else(|| parse_time(row.updated_at.as_deref()));
                if since.is_none_or(|t| now - t > Duration::minutes(DECIDED_STUCK_AFTER_MINUTES)) {
                    self.stuck.decided_too_long += 1;
                }
            }
            Some("reported") => self.by_state.reported += 1,
            Some("quarantined") => self.by_state.quarantined += 1,
            _ => self.by_state.other += 1,
        }
        let unfinished = matches!(
            row.state.as_deref(),
            Some("received" | "working" | "decided")
        );
        if unfinished {
            if row.parked_at.is_some() {
                self.stuck.parked += 1;
                self.parked_by_reason.add(row.parked_reason.as_deref());
            } else if row.due_at.is_none_or(|due| {
                due + Duration::minutes(OVERDUE_AFTER_MINUTES).num_milliseconds()
                    < now.timestamp_millis()
            }) {
                self.stuck.overdue += 1;
            }
            if row.redrives.unwrap_or(0) > 0 {
                self.recovery.redriven += 1;
            }
        }
        match row.report_result.as_deref() {
            Some("ack_lost") => self.recovery.ack_lost += 1,
            Some("not_outstanding") => self.recovery.not_outstanding += 1,
            _ => {}
        }
        match row.history.last().map(|h| h.status.to_ascii_uppercase()) {
            None => self.by_outcome.none += 1,
            Some(status) => match status.as_str() {
                "CRSUC" => self.by_outcome.crsuc += 1,
                "CREU1" => self.by_outcome.creu1 += 1,
                "CREU2" => self.by_outcome.creu2 += 1,
                "CREU3" => self.by_outcome.creu3 += 1,
                "CRRET" => self.by_outcome.crret += 1,
                _ => self.by_outcome.other += 1,
            },
        }
        if row.attempt.unwrap_or(1) > 1 {
            self.requeued += 1;
        }
    }

    /// Requests that will not finish without someone: parked, or overdue for the sweep.
    pub fn stuck_total(&self) -> u64 {
        self.stuck.overdue + self.stuck.parked
    }
}

/// Scan the requests table (every page) and count.
pub async fn status(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    now: DateTime<Utc>,
) -> Result<StatusReport, CliError> {
    status_paged(client, table, now, None).await
}

/// [`status`] with at most `page_size` items per Scan page.
pub async fn status_paged(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    now: DateTime<Utc>,
    page_size: Option<i32>,
) -> Result<StatusReport, CliError> {
    let mut report = StatusReport::new(table, now);
    let mut start: Option<HashMap<String, AttributeValue>> = None;
    loop {
        let output = client
            .scan()
            .table_name(table)
            .projection_expression("#s, #a, #lu, #da, #ua, #h, #due, #rd, #pk, #rr, #pr")
            .expression_attribute_names("#s", attr::STATE)
            .expression_attribute_names("#a", attr::ATTEMPT)
            .expression_attribute_names("#lu", attr::LEASE_UNTIL)
            .expression_attribute_names("#da", attr::DECIDED_AT)
            .expression_attribute_names("#ua", attr::UPDATED_AT)
            .expression_attribute_names("#h", attr::HISTORY)
            .expression_attribute_names("#due", attr::DUE_AT)
            .expression_attribute_names("#rd", attr::REDRIVES)
            .expression_attribute_names("#pk", attr::PARKED_AT)
            .expression_attribute_names("#rr", attr::REPORT_RESULT)
            .expression_attribute_names("#pr", attr::PARKED_REASON)
            .set_exclusive_start_key(start)
            .set_limit(page_size)
            .send()
            .await
            .map_err(|e| {
                CliError(format!(
                    "cannot scan the requests table {table}: {}",
                    crate::aws::describe(&e)
                ))
            })?;
        for item in output.items.unwrap_or_default() {
            match serde_dynamo::from_item::<_, Row>(item) {
                Ok(row) => report.add(&row, now),
                Err(_) => {
                    report.total += 1;
                    report.unreadable += 1;
                }
            }
        }
        match output.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(report),
        }
    }
}

impl Render for StatusReport {
    fn render(&self) -> String {
        let mut out = String::new();
        if let Some(directory) = &self.directory {
            out.push_str(&format!(
                "Member directory {}: {}\n\n",
                directory.table,
                directory.line()
            ));
        }
        out.push_str(&format!(
            "Requests in {} at {}: {}\n\n",
            self.table, self.at, self.total
        ));
        let mut states = Table::new(["state", "count"]);
        let s = &self.by_state;
        for (name, count) in [
            ("received", s.received),
            ("working", s.working),
            ("decided", s.decided),
            ("reported", s.reported),
            ("quarantined", s.quarantined),
        ] {
            states.row([name.to_owned(), count.to_string()]);
        }
        if s.other > 0 {
            states.row(["other".to_owned(), s.other.to_string()]);
        }
        out.push_str(&states.render());
        out.push('\n');
        let mut outcomes = Table::new(["last outcome", "count"]);
        let o = &self.by_outcome;
        for (name, count) in [
            ("CRSUC", o.crsuc),
            ("CREU1", o.creu1),
            ("CREU2", o.creu2),
            ("CREU3", o.creu3),
            ("CRRET", o.crret),
        ] {
            outcomes.row([name.to_owned(), count.to_string()]);
        }
        if o.other > 0 {
            outcomes.row(["other".to_owned(), o.other.to_string()]);
        }
        outcomes.row(["(none yet)".to_owned(), o.none.to_string()]);
        out.push_str(&outcomes.render());
        out.push('\n');
        let mut health = Table::new(["", "count"]);
        health.row([
            "requeued (attempt > 1)".to_owned(),
            self.requeued.to_string(),
        ]);
        health.row([
            "re-driven by the sweep (unfinished)".to_owned(),
            self.recovery.redriven.to_string(),
        ]);
        health.row([
            "working, lease expired (sweep re-arms)".to_owned(),
            self.stuck.working_expired_lease.to_string(),
        ]);
        health.row([
            format!("decided > {DECIDED_STUCK_AFTER_MINUTES} min"),
            self.stuck.decided_too_long.to_string(),
        ]);
        health.row([
            "reported: acknowledgement lost".to_owned(),
            self.recovery.ack_lost.to_string(),
        ]);
        health.row([
            "reported: not outstanding at our first PUT".to_owned(),
            self.recovery.not_outstanding.to_string(),
        ]);
        health.row([
            format!("stuck: overdue > {OVERDUE_AFTER_MINUTES} min for the sweep"),
            self.stuck.overdue.to_string(),
        ]);
        health.row([
            "stuck: parked (needs an operator)".to_owned(),
            self.stuck.parked.to_string(),
        ]);
        let p = &self.parked_by_reason;
        for (reason, count) in [
            ("redrives_exhausted", p.redrives_exhausted),
            ("decision_too_old", p.decision_too_old),
            ("dry_run", p.dry_run),
            ("duplicate_loyalty_number", p.duplicate_loyalty_number),
            ("other", p.other),
        ] {
            if count > 0 || reason != "other" {
                health.row([format!("  parked: {reason}"), count.to_string()]);
            }
        }
        if self.unreadable > 0 {
            health.row(["unreadable items".to_owned(), self.unreadable.to_string()]);
        }
        out.push_str(&health.render());
        if p.dry_run > 0 {
            out.push_str(
                "\nDry run: `triplink dry-run list` shows what would have been sent; to go live, deploy with DryRun=false, then `triplink retry --all-parked --reason dry_run`.\n",
            );
        }
        if p.duplicate_loyalty_number > 0 {
            out.push_str(
                "\nDuplicate loyalty numbers: fix the member file, import it, then `triplink retry --all-parked --reason duplicate_loyalty_number`.\n",
            );
        }
        if self.stuck_total() > 0 {
            out.push_str(
                "\nStuck requests: check that the poller runs (it sweeps), fix the cause, then `triplink retry ID` (or `triplink retry --all-parked`).\n",
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_rules() {
        let now = Utc::now();
        let mut report = StatusReport::new("t", now);
        let ms = now.timestamp_millis();
        let old = triplink_shared::store::layout::timestamp(now - Duration::minutes(16));
        let fresh = triplink_shared::store::layout::timestamp(now - Duration::minutes(1));
        let rows = [
            Row {
                state: Some("working".into()),
                lease_until: Some(ms - 1),
                ..Row::default()
            },
            Row {
                state: Some("working".into()),
                lease_until: Some(ms + 60_000),
                ..Row::default()
            },
            Row {
                state: Some("decided".into()),
                decided_at: Some(old),
                ..Row::default()
            },
            Row {
                state: Some("decided".into()),
                decided_at: Some(fresh),
                ..Row::default()
            },
            Row {
                state: Some("received".into()),
                attempt: Some(2),
                history: vec![HistoryRow {
                    status: "CREU1".into(),
                }],
                ..Row::default()
            },
        ];
        for row in &rows {
            report.add(row, now);
        }
        assert_eq!(report.total, 5);
        assert_eq!(report.by_state.working, 2);
        assert_eq!(report.stuck.working_expired_lease, 1);
        assert_eq!(report.stuck.decided_too_long, 1);
        assert_eq!(report.by_outcome.creu1, 1);
        assert_eq!(report.by_outcome.none, 4);
        assert_eq!(report.requeued, 1);
        // None of those rows has a due_at: written before the sweep existed, overdue.
        assert_eq!(report.stuck.overdue, 5);

        let mut report = StatusReport::new("t", now);
        for row in [
            Row {
                state: Some("working".into()),
                due_at: Some(ms - 60_000),
                redrives: Some(2),
                ..Row::default()
            },
            Row {
                state: Some("received".into()),
                due_at: Some(ms - 6 * 60_000),
                ..Row::default()
            },
            Row {
                state: Some("decided".into()),
                parked_at: Some(fresh_at(now)),
                redrives: Some(8),
                ..Row::default()
            },
            Row {
                state: Some("quarantined".into()),
                ..Row::default()
            },
            Row {
                state: Some("reported".into()),
                report_result: Some("ack_lost".into()),
                ..Row::default()
            },
            Row {
                state: Some("reported".into()),
                report_result: Some("not_outstanding".into()),
                ..Row::default()
            },
        ] {
            report.add(&row, now);
        }
        assert_eq!(report.by_state.quarantined, 1);
        assert_eq!(
            report.stuck,
            StuckCounts {
                working_expired_lease: 1,
                decided_too_long: 1,
                overdue: 1,
                parked: 1
            }
        );
        assert_eq!(report.stuck_total(), 2);
        assert_eq!(
            report.recovery,
            RecoveryCounts {
                redriven: 2,
                ack_lost: 1,
                not_outstanding: 1
            }
        );
        let text = report.render();
        assert!(text.contains("quarantined"), "{text}");
        assert!(text.contains("stuck: parked (needs an operator)"), "{text}");
    }

    fn fresh_at(now: DateTime<Utc>) -> String {
        triplink_shared::store::layout::timestamp(now)
    }
}
