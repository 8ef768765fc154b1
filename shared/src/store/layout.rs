//! The table layout: the one place that knows table keys, attribute names, item states,
//! TTLs and stream settings. The SAM template and the operator tool follow this file.
//!
//! ## Requests table (`REQUESTS_TABLE`)
//! * Key: `request_id` (S, hash) — Concur's `ID`. No sort key.
//! * Stream: `NEW_AND_OLD_IMAGES`; the worker acts on records whose new image has
//!   `state = received`.
//! * TTL backstop: an attempt not yet reported expires `UNSEEN_RETENTION_DAYS` (default
//!   30) after the poller last saw it in Concur's queue (moved on at most once a day,
//!   [`super::lifecycle::backstop_due`]), so names, e-mails and loyalty numbers of a
//!   request Concur stopped offering never stay for ever.
//! * TTL attribute: `expires_at` (epoch seconds), set when an attempt is reported. At the
//!   same moment the personal data and the request token are removed from the item, so
//!   only ids, states and the attempt history stay until the TTL deletes the item. The
//!   retention outlives Concur's requeue windows (4 × 24 h, 48 × 1 h), so a requeued
//!   request still finds its attempt count.
//! * States of one attempt: `received` (stored by the poller, or re-armed) → `working`
//!   (claimed by a worker under a lease) → `decided` (status chosen and recorded, PUT not
//!   yet acknowledged) → `reported` (Concur answered). `quarantined`: a page item that
//!   could not be read. A requeue (Concur returns the same `ID` after a report) starts
//!   attempt `n + 1` at `received`. The rules are in [`super::lifecycle`].
//! * GSI [`BY_DUE`]: hash `state`, range `due_at` (N), keys only; sparse (only unfinished,
//!   unparked items carry `due_at`). The poller's sweep reads it.
//!
//! ## Members table (`MEMBERS_TABLE`)
//! Two kinds of items share the table (see [`crate::members::dynamo`]):
//! * **Member items**, key `member_id` (S, hash): `loyalty_number` (S, the number's
//!   [`loyalty_key`](crate::matching::loyalty_key); absent for members without one),
//!   `loyalty_number_raw` (S, the number as imported, only when it differs from its key),
//!   `first_name` (S, optional), `last_name` (S), `emails` (L of S, as imported), `status`
//!   (S: `active`, `closed`, `locked` or `unverified`). A member item has no `email_key`.
//! * **E-mail pointer items**, one per address of a member (a GSI indexes one attribute
//!   value per item, and a member may have several addresses): `member_id` =
//!   `email#<email_key>#<owner member id>`, `email_key` (S, the address normalised by
//!   [`email_key`]: trimmed, lower-cased) and `owner_member_id` (S). Member ids must not
//!   start with `email#`.
//! * **The manifest item**, `member_id` = `manifest#directory`: `member_count` (N, the
//!   member items the table held after the last import) and `updated_at` (S). Written by
//!   `triplink members import`; read by the worker's health gate
//!   ([`crate::members::health`]). Member ids must not start with `manifest#`.
//! * GSI `by-loyalty-number`: hash `loyalty_number` (S); holds member items only.
//! * GSI `by-email`: hash `email_key` (S); holds pointer items only. A lookup reads the
//!   pointers, then the owners' member items, and keeps an owner only if its `emails`
//!   still hold the address (a pointer left behind is harmless).
//! * Writing a member puts its item and its pointers and deletes the pointers of the
//!   addresses it no longer has, in one transaction.
//!
//! ## Connections table (`CONNECTIONS_TABLE`)
//! * Key: `member_id` (S, hash): one Concur connection per member.
//! * The refresh token is stored encrypted with the KMS key (`refresh_token_ciphertext`, B).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{ConnectionRequest, ConnectionStatus};

/// Attribute names of the requests table.
pub mod attr {
    pub const REQUEST_ID: &str = "request_id";
    pub const STATE: &str = "state";
    pub const ATTEMPT: &str = "attempt";
    pub const REQUEST_TOKEN: &str = "request_token";
    pub const USER_ID: &str = "user_id";
    pub const FIRST_NAME: &str = "first_name";
    pub const MIDDLE_NAME: &str = "middle_name";
    pub const LAST_NAME: &str = "last_name";
    pub const LOYALTY_NUMBER: &str = "loyalty_number";
    pub const EMAILS: &str = "emails";
    pub const URI: &str = "uri";
    pub const LAST_MODIFIED: &str = "last_modified";
    pub const RECEIVED_AT: &str = "received_at";
    pub const UPDATED_AT: &str = "updated_at";
    pub const TIMES_POLLED: &str = "times_polled";
    pub const LEASE_OWNER: &str = "lease_owner";
    pub const LEASE_UNTIL: &str = "lease_until";
    pub const DECIDED_STATUS: &str = "decided_status";
    pub const DECIDED_AT: &str = "decided_at";
    pub const DECISION_REASON: &str = "decision_reason";
    pub const REPORTED_AT: &str = "reported_at";
    pub const HISTORY: &str = "history";
    pub const EXPIRES_AT: &str = "expires_at";
    pub const DUE_AT: &str = "due_at";
    pub const REDRIVES: &str = "redrives";
    pub const EXCHANGE_STARTED_AT: &str = "exchange_started_at";
    pub const PUTS_SENT: &str = "puts_sent";
    pub const REPORT_RESULT: &str = "report_result";
    pub const PARKED_AT: &str = "parked_at";
    pub const PARKED_REASON: &str = "parked_reason";
    pub const QUARANTINE_REASON: &str = "quarantine_reason";
    pub const DRY_RUN_STATUS: &str = "dry_run_status";
    pub const DRY_RUN_REASON: &str = "dry_run_reason";

    /// Personal data and secrets: removed when an attempt is reported.
    pub const PERSONAL: [&str; 8] = [
        REQUEST_TOKEN,
        FIRST_NAME,
        MIDDLE_NAME,
        LAST_NAME,
        LOYALTY_NUMBER,
        EMAILS,
        USER_ID,
        URI,
    ];
}

/// Key and index names of the members and connections tables.
pub mod members {
    pub const MEMBER_ID: &str = "member_id";
    pub const LOYALTY_NUMBER: &str = "loyalty_number";
    pub const EMAIL_KEY: &str = "email_key";
    pub const BY_LOYALTY_NUMBER: &str = "by-loyalty-number";
    pub const BY_EMAIL: &str = "by-email";
    pub const LOYALTY_NUMBER_RAW: &str = "loyalty_number_raw";
    pub const FIRST_NAME: &str = "first_name";
    pub const LAST_NAME: &str = "last_name";
    pub const EMAILS: &str = "emails";
    pub const STATUS: &str = "status";
    /// On e-mail pointer items: the member the address belongs to.
    pub const OWNER_MEMBER_ID: &str = "owner_member_id";
    /// The `member_id` of an e-mail pointer item is this prefix, the e-mail key, `#` and
    /// the owner's member id.
    pub const EMAIL_POINTER_PREFIX: &str = "email#";
    /// Reserved `member_id` prefix of bookkeeping items.
    pub const MANIFEST_PREFIX: &str = "manifest#";
    /// The `member_id` of the manifest item.
    pub const MANIFEST_ID: &str = "manifest#directory";
    /// On the manifest item: how many member items the table holds.
    pub const MEMBER_COUNT: &str = "member_count";
    /// On the manifest item: when it was written (RFC 3339).
    pub const UPDATED_AT: &str = "updated_at";
}

/// The requests table's sparse index of items that the sweep must look at: hash
/// `state` (S), range `due_at` (N, epoch ms), keys only. Only items that are neither
/// reported, quarantined nor parked carry `due_at` (see [`super::lifecycle`]).
pub const BY_DUE: &str = "by-due";

/// The TTL attribute of the requests table.
pub const TTL_ATTRIBUTE: &str = attr::EXPIRES_AT;

/// How long a finished request's (personal-data-free) record is kept by default.
pub const DEFAULT_RETENTION_DAYS: i64 = 30;

/// How long an unfinished request is kept after the poller last saw it, by default.
pub const DEFAULT_UNSEEN_RETENTION_DAYS: i64 = 30;

/// Where one attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    Received,
    Working,
    Decided,
    Reported,
    /// Read from Concur but not readable as a request: kept (without personal data) so
    /// the next polls do not trip on it again; never processed.
    Quarantined,
}

impl RequestState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Working => "working",
            Self::Decided => "decided",
            Self::Reported => "reported",
            Self::Quarantined => "quarantined",
        }
    }
}

/// One attempt's outcome, kept in the item's history (no personal data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub status: ConnectionStatus,
    pub decided_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How Concur took the PUT: `accepted`, `ack_lost` or `not_outstanding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<super::lifecycle::ReportResult>,
}

/// A requests-table item, as stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestItem {
    pub request_id: String,
    pub state: RequestState,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub middle_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loyalty_number: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    pub received_at: String,
    pub updated_at: String,
    #[serde(default)]
    pub times_polled: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_owner: Option<String>,
    /// Epoch milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_status: Option<ConnectionStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_at: Option<String>,
    #[serde(default)]
    pub history: Vec<AttemptRecord>,
    /// Epoch seconds (DynamoDB TTL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// Epoch ms after which the sweep re-arms the item (absent once reported, parked or
    /// quarantined). See [`super::lifecycle`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<i64>,
    /// Automatic re-arms of this attempt.
    #[serde(default)]
    pub redrives: u32,
    /// When the stored request token was submitted to the grant (cleared with a new token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_started_at: Option<String>,
    /// PUTs of this attempt's status sent so far.
    #[serde(default)]
    pub puts_sent: u32,
    /// How Concur took the reported status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_result: Option<super::lifecycle::ReportResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked_reason: Option<String>,
    /// Why a quarantined item could not be read (no input quoted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine_reason: Option<String>,
    /// In dry-run mode: the status the worker would have sent (nothing was sent, no
    /// token exchanged), and why. The item is parked with reason `dry_run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run_status: Option<ConnectionStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run_reason: Option<String>,
}

/// Timestamps are stored as RFC 3339 UTC with milliseconds.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The TTL of a request reported at `at`.
pub fn expiry(at: DateTime<Utc>, retention_days: i64) -> i64 {
    (at + Duration::days(retention_days)).timestamp()
}

/// The lookup key of an e-mail address: trimmed and lower-cased. Concur's verified
/// e-mails are unique per user; case never distinguishes two mailboxes in practice.
pub fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

impl RequestItem {
    /// An item of `id` in `state` with nothing else known, created at `now`.
    fn bare(id: &str, state: RequestState, now: DateTime<Utc>) -> Self {
        let at = timestamp(now);
        Self {
            request_id: id.to_owned(),
            state,
            attempt: 1,
            request_token: None,
            user_id: None,
            first_name: None,
            middle_name: None,
            last_name: None,
            loyalty_number: None,
            emails: Vec::new(),
            uri: None,
            last_modified: None,
            received_at: at.clone(),
            updated_at: at,
            times_polled: 1,
            lease_owner: None,
            lease_until: None,
            decided_status: None,
            decided_at: None,
            decision_reason: None,
            reported_at: None,
            history: Vec::new(),
            expires_at: None,
            due_at: None,
            redrives: 0,
            exchange_started_at: None,
            puts_sent: 0,
            report_result: None,
            parked_at: None,
            parked_reason: None,
            quarantine_reason: None,
            dry_run_status: None,
            dry_run_reason: None,
        }
    }

    /// A request seen for the first time: attempt 1, `received`, due for the sweep if no
    /// worker takes it (see [`super::lifecycle`]).
    pub fn received(request: &ConnectionRequest, now: DateTime<Utc>) -> Self {
        Self {
            request_token: request.request_token_secret().map(str::to_owned),
            user_id: request.user_id.clone(),
            first_name: request.first_name.clone(),
            middle_name: request.middle_name.clone(),
            last_name: request.last_name.clone(),
            loyalty_number: request.loyalty_number.clone(),
            emails: request.emails.clone(),
            uri: request.uri.clone(),
            last_modified: request.last_modified.map(timestamp),
            due_at: Some(super::lifecycle::received_due(now)),
            ..Self::bare(&request.id, RequestState::Received, now)
        }
    }

    /// A page item that could not be read: its id and why, nothing else; it expires
    /// after `retention_days`.
    pub fn quarantined(id: &str, reason: &str, now: DateTime<Utc>, retention_days: i64) -> Self {
        Self {
            expires_at: Some(expiry(now, retention_days)),
            quarantine_reason: Some(reason.to_owned()),
            ..Self::bare(id, RequestState::Quarantined, now)
        }
    }
}

impl RequestItem {
    /// The request as the worker matches it (the stored attempt's data and token).
    pub fn to_request(&self) -> ConnectionRequest {
        ConnectionRequest {
            id: self.request_id.clone(),
            uri: self.uri.clone(),
            user_id: self.user_id.clone(),
            first_name: self.first_name.clone(),
            middle_name: self.middle_name.clone(),
            last_name: self.last_name.clone(),
            loyalty_number: self.loyalty_number.clone(),
            status: None,
            request_token: self.request_token.clone().map(secrecy::SecretString::from),
            last_modified: self
                .last_modified
                .as_deref()
                .and_then(crate::model::parse_last_modified),
            emails: self.emails.clone(),
            discount_code: None,
            message: None,
        }
    }
}

impl std::fmt::Debug for RequestItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::privacy;
        f.debug_struct("RequestItem")
            .field("request_id", &self.request_id)
            .field("state", &self.state)
            .field("attempt", &self.attempt)
            .field(
                "request_token",
                &self.request_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("user_id", &self.user_id)
            .field("last_name", &privacy::name(self.last_name.as_deref()))
            .field(
                "loyalty_number",
                &privacy::loyalty(self.loyalty_number.as_deref()),
            )
            .field("decided_status", &self.decided_status)
            .field("due_at", &self.due_at)
            .field("redrives", &self.redrives)
            .field("history", &self.history)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{json, ConnectionRequest};

    fn request() -> ConnectionRequest {
        ConnectionRequest::from_wire(
            json::parse_request(
                r#"{"ID":"r1","lastName":"Müller","loyaltyNumber":"998877","requestToken":"tok","userId":"u1",
                    "emailAddresses":{"email1":"a@example.com"},"lastModified":"2022-11-02T09:39:21"}"#,
            )
            .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn a_new_item_is_attempt_one_received_with_the_request_data() {
        let now = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let item = RequestItem::received(&request(), now);
        assert_eq!(item.state, RequestState::Received);
        assert_eq!(item.attempt, 1);
        assert_eq!(item.request_token.as_deref(), Some("tok"));
        assert_eq!(
            item.last_modified.as_deref(),
            Some("2022-11-02T09:39:21.000Z")
        );
        assert_eq!(item.received_at, "2026-01-02T03:04:05.000Z");
        let stored = serde_json::to_value(&item).unwrap();
        assert_eq!(stored["state"], "received");
        assert!(
            stored.get("decided_status").is_none(),
            "absent values are not stored"
        );
        let back: RequestItem = serde_json::from_value(stored).unwrap();
        assert_eq!(back, item);
    }

    #[test]
    fn debug_hides_personal_data_and_the_token() {
        let shown = format!("{:?}", RequestItem::received(&request(), Utc::now()));
        for secret in ["Müller", "998877", "tok\"", "a@example.com"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn an_item_gives_back_the_request_it_was_made_from() {
        let request = request();
        let back = RequestItem::received(&request, Utc::now()).to_request();
        assert_eq!(back.id, request.id);
        assert_eq!(back.last_name, request.last_name);
        assert_eq!(back.loyalty_number, request.loyalty_number);
        assert_eq!(back.emails, request.emails);
        assert_eq!(back.user_id, request.user_id);
        assert_eq!(back.request_token_secret(), Some("tok"));
        assert_eq!(back.last_modified, request.last_modified);
    }

    #[test]
    fn expiry_and_email_keys() {
        let at = DateTime::from_timestamp(1_000_000, 0).unwrap();
        assert_eq!(expiry(at, 1), 1_000_000 + 86_400);
        assert_eq!(
            email_key("  Maria.Smith@Example.COM "),
            "maria.smith@example.com"
        );
    }
}
