//! `status`, `show` and `retry` against a requests table on moto (and, for a decided
//! request, the Concur sandbox).

mod common;

use chrono::{Duration, Utc};
use common::*;
use serde_json::Value;
use triplink_cli::output::{format_report, OutputFormat};
use triplink_cli::retry::{retry, retry_command, Action};
use triplink_cli::show::show;
use triplink_cli::status::status_paged;
use triplink_shared::model::ConnectionStatus;
use triplink_shared::store::layout::{timestamp, RequestItem, RequestState};

#[tokio::test]
async fn status_counts_states_outcomes_requeues_and_stuck_requests_over_several_pages() {
    let (table, store) = requests_table().await;
    let now = Utc::now();
    let mut requeued = item("r-received-2", RequestState::Received, 2, now);
    requeued.history = reported("x", 1, ConnectionStatus::AccountNotFound, now).history;
    for item in [
        item("r-received-1", RequestState::Received, 1, now),
        requeued,
        working("r-working-expired", now - Duration::minutes(1), now),
        working("r-working-live", now + Duration::minutes(5), now),
        decided(
            "r-decided-old",
            ConnectionStatus::AccountNotFound,
            now - Duration::minutes(20),
            now,
        ),
        decided(
            "r-decided-fresh",
            ConnectionStatus::Connected,
            now - Duration::minutes(2),
            now,
        ),
        reported("r-reported-1", 1, ConnectionStatus::Connected, now),
        reported("r-reported-2", 1, ConnectionStatus::Connected, now),
        reported("r-reported-3", 3, ConnectionStatus::Retry, now),
        reported(
            "r-reported-4",
            1,
            ConnectionStatus::AccountNeedsAttention,
            now,
        ),
    ] {
        put(&store, &item).await;
    }
    let report = status_paged(&dynamo(), &table, now, Some(3)).await.unwrap();
    assert_eq!(report.total, 10);
    let s = &report.by_state;
    assert_eq!(
        (s.received, s.working, s.decided, s.reported, s.other),
        (2, 2, 2, 4, 0)
    );
    let o = &report.by_outcome;
    assert_eq!(
        (o.crsuc, o.creu1, o.creu2, o.creu3, o.crret, o.none),
        (2, 1, 0, 1, 1, 5)
    );
    assert_eq!(report.requeued, 2);
    assert_eq!(report.stuck.working_expired_lease, 1);
    assert_eq!(report.stuck.decided_too_long, 1);

    let json: Value = serde_json::from_str(&format_report(&report, OutputFormat::Json)).unwrap();
    assert_eq!(json["by_state"]["reported"], 4);
    assert_eq!(json["by_outcome"]["CRSUC"], 2);
    assert_eq!(json["stuck"]["working_expired_lease"], 1);
    let text = format_report(&report, OutputFormat::Table);
    assert!(text.contains("CRRET"), "{text}");
    assert!(text.contains("decided > 15 min"), "{text}");
    assert_eq!(
        report.stuck_total(),
        0,
        "every unfinished item is due in the future"
    );
}

#[tokio::test]
async fn show_masks_personal_data_unless_revealed_and_never_shows_the_token() {
    let (_, store) = requests_table().await;
    let now = Utc::now();
    let item = working("r-show", now + Duration::minutes(5), now);
    put(&store, &item).await;

    let masked = show(&store, "r-show", false, now).await.unwrap();
    for format in [OutputFormat::Table, OutputFormat::Json] {
        let text = format_report(&masked, format);
        for secret in [
            "Maria",
            "Müller",
            "99887766",
            "maria.mueller",
            "example.com",
            "tok-SECRET",
        ] {
            assert!(!text.contains(secret), "{secret} shown in {text}");
        }
        assert!(text.contains("[REDACTED]"), "{text}");
        assert!(text.contains("M***"), "{text}");
        assert!(text.contains("***66"), "{text}");
        assert!(text.contains("m***@***.com"), "{text}");
        assert!(text.contains("lambda-request-1"), "{text}");
    }
    let json: Value = serde_json::from_str(&format_report(&masked, OutputFormat::Json)).unwrap();
    assert_eq!(json["state"], "working");
    assert_eq!(json["lease"]["expired"], false);
    assert_eq!(json["masked"], true);

    let revealed = show(&store, "r-show", true, now).await.unwrap();
    for format in [OutputFormat::Table, OutputFormat::Json] {
        let text = format_report(&revealed, format);
        for shown in ["Maria", "Müller", "99887766", "maria.mueller@example.com"] {
            assert!(text.contains(shown), "{shown} not in {text}");
        }
        assert!(!text.contains("tok-SECRET"), "token shown in {text}");
        assert!(text.contains("[REDACTED]"), "{text}");
    }

    let history = reported("r-history", 2, ConnectionStatus::AccountMismatch, now);
    put(&store, &history).await;
    let view = show(&store, "r-history", false, now).await.unwrap();
    let text = format_report(&view, OutputFormat::Table);
    assert!(text.contains("CREU2"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("request token") && l.ends_with("absent")),
        "{text}"
    );

    let missing = show(&store, "r-none", false, now).await.unwrap_err();
    assert!(missing
        .to_string()
        .contains("r-none is not in the requests table"));
}

#[tokio::test]
async fn retry_rearms_an_expired_working_request() {
    let (table, store) = requests_table().await;
    let now = Utc::now();
    let mut stuck = working("r-expired", now - Duration::seconds(5), now);
    stuck.redrives = 8;
    stuck.parked_at = Some(timestamp(now));
    stuck.due_at = None;
    put(&store, &stuck).await;
    let report = retry_command(&store, "r-expired", false).await.unwrap();
    assert_eq!(report.action, Action::Rearmed);
    assert_eq!(report.state, Some("working"));
    let after = get(&store, "r-expired").await;
    assert_eq!(after.state, RequestState::Received);
    assert_eq!(after.attempt, 1);
    assert_eq!(after.lease_owner, None);
    assert_eq!(after.redrives, 0, "an operator's re-arm resets the bound");
    assert_eq!(after.parked_at, None);
    assert!(after.due_at.is_some(), "back under the sweep");
    assert_eq!(
        stream_records(&table, "r-expired").await,
        2,
        "the stream emits the re-armed item"
    );
}

#[tokio::test]
async fn retry_refuses_a_live_lease_unless_forced() {
    let (_, store) = requests_table().await;
    let now = Utc::now();
    put(&store, &working("r-live", now + Duration::minutes(5), now)).await;
    let refused = retry_command(&store, "r-live", false).await.unwrap_err();
    assert!(refused.to_string().contains("--force"), "{refused}");
    assert_eq!(get(&store, "r-live").await.state, RequestState::Working);

    let forced = retry_command(&store, "r-live", true).await.unwrap();
    assert_eq!(forced.action, Action::Rearmed);
    assert_eq!(get(&store, "r-live").await.state, RequestState::Received);
}

/// Stream records of `table` whose key is `id`.
async fn stream_records(table: &str, id: &str) -> usize {
    read_stream(table)
        .await
        .records
        .iter()
        .filter(|r| {
            r.dynamodb
                .as_ref()
                .and_then(|d| d.keys.as_ref())
                .and_then(|k| k.get("request_id"))
                == Some(&aws_sdk_dynamodbstreams::types::AttributeValue::S(
                    id.to_owned(),
                ))
        })
        .count()
}

#[tokio::test]
async fn retry_rearms_a_received_request_so_the_stream_emits_it_again() {
    let (table, store) = requests_table().await;
    let now = Utc::now();
    let before = item("r-received", RequestState::Received, 2, now);
    put(&store, &before).await;
    assert_eq!(stream_records(&table, "r-received").await, 1);
    let report = retry_command(&store, "r-received", false).await.unwrap();
    assert_eq!(report.action, Action::Rearmed);
    let after = get(&store, "r-received").await;
    assert_eq!(after.state, RequestState::Received);
    assert_eq!(after.attempt, 2);
    assert_ne!(after.updated_at, before.updated_at);
    assert_eq!(after.request_token, before.request_token);
    assert_eq!(stream_records(&table, "r-received").await, 2);
}

#[tokio::test]
async fn retry_of_a_reported_or_quarantined_request_has_nothing_to_do_and_an_unknown_one_is_an_error(
) {
    let (_, store) = requests_table().await;
    let now = Utc::now();
    let done = reported("r-done", 1, ConnectionStatus::Connected, now);
    put(&store, &done).await;
    let report = retry_command(&store, "r-done", false).await.unwrap();
    assert_eq!(report.action, Action::NothingToRetry);
    assert!(
        report.message.contains("nothing to retry"),
        "{}",
        report.message
    );
    assert_eq!(get(&store, "r-done").await, done);

    let quarantined = RequestItem::quarantined("r-bad", "malformed_item", now, 30);
    put(&store, &quarantined).await;
    let report = retry_command(&store, "r-bad", false).await.unwrap();
    assert_eq!(report.action, Action::NothingToRetry);
    assert!(
        report.message.contains("malformed_item"),
        "{}",
        report.message
    );
    assert_eq!(get(&store, "r-bad").await, quarantined);

    let missing = retry_command(&store, "r-missing", false).await.unwrap_err();
    assert!(
        missing.to_string().contains("not in the requests table"),
        "{missing}"
    );
    let lenient = retry(&store, "r-missing", false).await.unwrap();
    assert_eq!(lenient.action, Action::NotFound);
}

#[tokio::test]
async fn retry_of_a_decided_request_keeps_its_status_for_the_worker_to_resend() {
    let (_, store) = requests_table().await;
    let now = Utc::now();
    let mut old = decided(
        "r-decided",
        ConnectionStatus::AccountNotFound,
        now - Duration::hours(2),
        now,
    );
    old.lease_until = Some((now - Duration::minutes(1)).timestamp_millis());
    old.parked_at = Some(timestamp(now));
    old.parked_reason = Some("decision_too_old".into());
    put(&store, &old).await;
    let report = retry_command(&store, "r-decided", false).await.unwrap();
    assert_eq!(report.action, Action::Rearmed);
    assert_eq!(report.status.as_deref(), Some("CREU1"));
    let after = get(&store, "r-decided").await;
    assert_eq!(after.state, RequestState::Received);
    assert_eq!(
        after.decided_status,
        Some(ConnectionStatus::AccountNotFound),
        "never re-decided"
    );
    assert!(
        after.decided_at.as_deref() > old.decided_at.as_deref(),
        "the operator opens a new re-send window"
    );
    assert_eq!(after.parked_at, None);
    assert_eq!(after.parked_reason, None);
}
