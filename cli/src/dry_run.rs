//! `triplink dry-run list`: what the worker would have sent in dry-run mode
//! (`DRY_RUN=true`): every request parked with reason `dry_run`, with the status it would
//! have reported and why, and counts by would-be status.
//!
//! Only ids, states, statuses, reasons and timestamps are read (a projection): no names,
//! e-mails, loyalty numbers or tokens leave the table.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};
use triplink_shared::store::layout::attr;
use triplink_shared::store::lifecycle::ParkReason;

use crate::output::{Render, Table};
use crate::CliError;

/// The attributes read (no personal data).
#[derive(Debug, Deserialize)]
struct Row {
    request_id: String,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    attempt: Option<u32>,
    #[serde(default)]
    dry_run_status: Option<String>,
    #[serde(default)]
    dry_run_reason: Option<String>,
    #[serde(default)]
    parked_at: Option<String>,
}

/// One request the dry run decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DryRunEntry {
    pub request_id: String,
    pub attempt: Option<u32>,
    /// The state the item is in (`working` for a dry-run decision).
    pub state: Option<String>,
    /// The status the worker would have sent (`CRSUC`, `CREU1`, ...).
    pub would_send: Option<String>,
    /// Why (`matched`, `not_found`, ...; no personal data).
    pub reason: Option<String>,
    /// When it was decided and parked.
    pub parked_at: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DryRunReport {
    pub table: String,
    pub total: u64,
    /// Requests by the status they would have been sent (`none` when not recorded).
    pub by_status: BTreeMap<String, u64>,
    /// Oldest first.
    pub requests: Vec<DryRunEntry>,
}

/// Scan the requests table for items parked by the dry run.
pub async fn list(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    page_size: Option<i32>,
) -> Result<DryRunReport, CliError> {
    let mut report = DryRunReport {
        table: table.to_owned(),
        ..DryRunReport::default()
    };
    let mut start: Option<HashMap<String, AttributeValue>> = None;
    loop {
        let output = client
            .scan()
            .table_name(table)
            .filter_expression("#pr = :dry_run AND attribute_exists(#pk)")
            .projection_expression("#id, #s, #a, #ds, #dr, #pk")
            .expression_attribute_names("#id", attr::REQUEST_ID)
            .expression_attribute_names("#s", attr::STATE)
            .expression_attribute_names("#a", attr::ATTEMPT)
            .expression_attribute_names("#ds", attr::DRY_RUN_STATUS)
            .expression_attribute_names("#dr", attr::DRY_RUN_REASON)
            .expression_attribute_names("#pk", attr::PARKED_AT)
            .expression_attribute_names("#pr", attr::PARKED_REASON)
            .expression_attribute_values(
                ":dry_run",
                AttributeValue::S(ParkReason::DryRun.as_str().to_owned()),
            )
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
            let row: Row = serde_dynamo::from_item(item)
                .map_err(|e| CliError(format!("an item of {table} cannot be read: {e}")))?;
            let status = row
                .dry_run_status
                .clone()
                .unwrap_or_else(|| "none".to_owned());
            *report.by_status.entry(status).or_default() += 1;
            report.total += 1;
            report.requests.push(DryRunEntry {
                request_id: row.request_id,
                attempt: row.attempt,
                state: row.state,
                would_send: row.dry_run_status,
                reason: row.dry_run_reason,
                parked_at: row.parked_at,
            });
        }
        match output.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => break,
        }
    }
    report.requests.sort_by(|a, b| {
        (a.parked_at.as_deref(), a.request_id.as_str())
            .cmp(&(b.parked_at.as_deref(), b.request_id.as_str()))
    });
    Ok(report)
}

impl Render for DryRunReport {
    fn render(&self) -> String {
        let mut out = format!(
            "Requests decided by the dry run in {}: {}\n",
            self.table, self.total
        );
        if self.total == 0 {
            return out;
        }
        out.push('\n');
        let mut counts = Table::new(["would send", "count"]);
        for (status, count) in &self.by_status {
            counts.row([status.clone(), count.to_string()]);
        }
        out.push_str(&counts.render());
        out.push('\n');
        let mut rows = Table::new(["request id", "attempt", "would send", "reason", "when"]);
        for entry in &self.requests {
            let dash = || "-".to_owned();
            rows.row([
                entry.request_id.clone(),
                entry.attempt.map(|a| a.to_string()).unwrap_or_else(dash),
                entry.would_send.clone().unwrap_or_else(dash),
                entry.reason.clone().unwrap_or_else(dash),
                entry.parked_at.clone().unwrap_or_else(dash),
            ]);
        }
        out.push_str(&rows.render());
        out.push_str(
            "\nNothing was sent to Concur for these. To go live: enable live mode (DryRun=false), then `triplink retry --all-parked --reason dry_run`.\n",
        );
        out
    }
}
