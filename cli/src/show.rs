//! `triplink show ID`: one request, personal data masked unless `--reveal`, the request
//! token never shown.

use chrono::{DateTime, Utc};
use serde::Serialize;
use triplink_shared::privacy;
use triplink_shared::store::layout::{timestamp, AttemptRecord, RequestItem};
use triplink_shared::store::RequestStore;

use crate::output::{fields, Render, Table};
use crate::CliError;

/// What stands in for the request token when the item holds one.
pub const TOKEN_PLACEHOLDER: &str = "[REDACTED]";

#[derive(Debug, Clone, Serialize)]
pub struct LeaseView {
    pub owner: Option<String>,
    /// Epoch milliseconds, as stored.
    pub until_ms: Option<i64>,
    pub until: Option<String>,
    pub expired: bool,
}

/// One request as shown to an operator.
#[derive(Debug, Clone, Serialize)]
pub struct RequestView {
    pub request_id: String,
    pub state: &'static str,
    pub attempt: u32,
    pub received_at: String,
    pub updated_at: String,
    pub last_modified: Option<String>,
    pub times_polled: u32,
    pub lease: Option<LeaseView>,
    pub decided_status: Option<String>,
    pub decided_at: Option<String>,
    pub decision_reason: Option<String>,
    pub reported_at: Option<String>,
    pub expires_at: Option<String>,
    /// Whether the names, loyalty number and e-mails below are masked.
    pub masked: bool,
    pub user_id: Option<String>,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub last_name: Option<String>,
    pub loyalty_number: Option<String>,
    pub emails: Vec<String>,
    /// `[REDACTED]` when the item holds a request token; never the token.
    pub request_token: Option<&'static str>,
    pub history: Vec<AttemptRecord>,
}

impl RequestView {
    pub fn new(item: &RequestItem, reveal: bool, now: DateTime<Utc>) -> Self {
        let name = |value: &Option<String>| -> Option<String> {
            value.as_deref().map(|v| {
                if reveal {
                    v.to_owned()
                } else {
                    privacy::name(Some(v)).to_string()
                }
            })
        };
        let lease = (item.lease_owner.is_some() || item.lease_until.is_some()).then(|| LeaseView {
            owner: item.lease_owner.clone(),
            until_ms: item.lease_until,
            until: item
                .lease_until
                .and_then(DateTime::from_timestamp_millis)
                .map(timestamp),
            expired: item
                .lease_until
                .is_none_or(|until| until <= now.timestamp_millis()),
        });
        Self {
            request_id: item.request_id.clone(),
            state: item.state.as_str(),
            attempt: item.attempt,
            received_at: item.received_at.clone(),
            updated_at: item.updated_at.clone(),
            last_modified: item.last_modified.clone(),
            times_polled: item.times_polled,
            lease,
            decided_status: item.decided_status.map(|s| s.as_str().to_owned()),
            decided_at: item.decided_at.clone(),
            decision_reason: item.decision_reason.clone(),
            reported_at: item.reported_at.clone(),
            expires_at: item
                .expires_at
                .and_then(|s| DateTime::from_timestamp(s, 0))
                .map(timestamp),
            masked: !reveal,
            user_id: item.user_id.clone(),
            first_name: name(&item.first_name),
            middle_name: name(&item.middle_name),
            last_name: name(&item.last_name),
            loyalty_number: item.loyalty_number.as_deref().map(|v| {
                if reveal {
                    v.to_owned()
                } else {
                    privacy::loyalty(Some(v)).to_string()
                }
            }),
            emails: item
                .emails
                .iter()
                .map(|e| {
                    if reveal {
                        e.clone()
                    } else {
                        privacy::email(Some(e)).to_string()
                    }
                })
                .collect(),
            request_token: item.request_token.as_ref().map(|_| TOKEN_PLACEHOLDER),
            history: item.history.clone(),
        }
    }
}

/// Read one request.
pub async fn show<S: RequestStore>(
    store: &S,
    id: &str,
    reveal: bool,
    now: DateTime<Utc>,
) -> Result<RequestView, CliError> {
    let item = store
        .get(id)
        .await
        .map_err(|e| CliError(format!("cannot read request {id}: {e}")))?
        .ok_or_else(|| CliError(format!("request {id} is not in the requests table")))?;
    Ok(RequestView::new(&item, reveal, now))
}

fn or_dash(value: &Option<String>) -> String {
    value.clone().unwrap_or_else(|| "-".into())
}

impl Render for RequestView {
    fn render(&self) -> String {
        let lease = match &self.lease {
            None => "-".to_owned(),
            Some(lease) => format!(
                "{} until {}{}",
                lease.owner.as_deref().unwrap_or("?"),
                lease.until.as_deref().unwrap_or("?"),
                if lease.expired {
                    " (expired)"
                } else {
                    " (live)"
                }
            ),
        };
        let personal = if self.masked { " (masked)" } else { "" };
        let mut out = fields(&[
            ("request id", self.request_id.clone()),
            ("state", self.state.to_owned()),
            ("attempt", self.attempt.to_string()),
            ("received at", self.received_at.clone()),
            ("updated at", self.updated_at.clone()),
            ("last modified", or_dash(&self.last_modified)),
            ("times polled", self.times_polled.to_string()),
            ("lease", lease),
            ("decided status", or_dash(&self.decided_status)),
            ("decided at", or_dash(&self.decided_at)),
            ("decision reason", or_dash(&self.decision_reason)),
            ("reported at", or_dash(&self.reported_at)),
            ("expires at", or_dash(&self.expires_at)),
            ("user id", or_dash(&self.user_id)),
            ("name", {
                let parts: Vec<&str> = [&self.first_name, &self.middle_name, &self.last_name]
                    .into_iter()
                    .filter_map(|p| p.as_deref())
                    .collect();
                if parts.is_empty() {
                    "-".to_owned()
                } else {
                    format!("{}{personal}", parts.join(" "))
                }
            }),
            (
                "loyalty number",
                match &self.loyalty_number {
                    Some(number) => format!("{number}{personal}"),
                    None => "-".to_owned(),
                },
            ),
            (
                "e-mails",
                if self.emails.is_empty() {
                    "-".to_owned()
                } else {
                    format!("{}{personal}", self.emails.join(", "))
                },
            ),
            (
                "request token",
                self.request_token.unwrap_or("absent").to_owned(),
            ),
        ]);
        out.push_str("\nhistory:\n");
        if self.history.is_empty() {
            out.push_str("  (no attempt reported yet)\n");
        } else {
            let mut table =
                Table::new(["attempt", "status", "decided at", "reported at", "reason"]);
            for record in &self.history {
                table.row([
                    record.attempt.to_string(),
                    record.status.as_str().to_owned(),
                    record.decided_at.clone(),
                    or_dash(&record.reported_at),
                    or_dash(&record.reason),
                ]);
            }
            out.push_str(&table.render());
        }
        out
    }
}
