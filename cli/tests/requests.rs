//! `status`, `show` and `retry` against a requests table on moto (and, for a decided
//! request, the Concur sandbox).

mod common;

use chrono::{Duration, Utc};
use common::*;
use concur_sandbox::{spawn, Config};
use serde_json::Value;
use triplink_cli::output::{format_report, OutputFormat};
use triplink_cli::retry::{retry, retry_command, Action, ConcurSender};
use triplink_cli::show::show;
use triplink_cli::status::status_paged;
use triplink_shared::config::ConcurSettings;
use triplink_shared::model::ConnectionStatus;
use triplink_shared::store::layout::RequestState;
use triplink_shared::testing;

const DAYS: i64 = 30;

fn sender(
    env: std::collections::HashMap<String, String>,
) -> ConcurSender<std::collections::HashMap<String, String>> {
    ConcurSender::new(testing::sdk_config(), env)
}

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
    assert!(text.contains("stuck: decided > 15 min"), "{text}");
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
async fn retry_sends_an_expired_working_request_back_to_received() {
    let (_, store) = requests_table().await;
    let now = Utc::now();
    put(
        &store,
        &working("r-expired", now - Duration::seconds(5), now),
    )
    .await;
    let sender = sender(no_concur());
    let report = retry_command(&store, &sender, "r-expired", false, DAYS)
        .await
        .unwrap();
    assert_eq!(report.action, Action::Redriven);
    assert_eq!(report.state, Some("working"));
    let after = get(&store, "r-expired").await;
    assert_eq!(after.state, RequestState::Received);
    assert_eq!(after.attempt, 1);
    assert_eq!(after.lease_owner, None);
}

#[tokio::test]
async fn retry_refuses_a_live_lease_unless_forced() {
    let (_, store) = requests_table().await;
    let now = Utc::now();
    put(&store, &working("r-live", now + Duration::minutes(5), now)).await;
    let sender = sender(no_concur());
    let refused = retry_command(&store, &sender, "r-live", false, DAYS)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("--force"), "{refused}");
    assert_eq!(get(&store, "r-live").await.state, RequestState::Working);

    let forced = retry_command(&store, &sender, "r-live", true, DAYS)
        .await
        .unwrap();
    assert_eq!(forced.action, Action::Redriven);
    assert_eq!(get(&store, "r-live").await.state, RequestState::Received);
}

/// Stream records of `table` whose key is `id`.
async fn stream_records(table: &str, id: &str) -> usize {
    let described = dynamo()
        .describe_table()
        .table_name(table)
        .send()
        .await
        .unwrap();
    let arn = described.table.unwrap().latest_stream_arn.unwrap();
    let streams = aws_sdk_dynamodbstreams::Client::new(&testing::sdk_config());
    let stream = streams
        .describe_stream()
        .stream_arn(&arn)
        .send()
        .await
        .unwrap();
    let shard = stream.stream_description.unwrap().shards.unwrap()[0]
        .shard_id
        .clone()
        .unwrap();
    let iterator = streams
        .get_shard_iterator()
        .stream_arn(&arn)
        .shard_id(shard)
        .shard_iterator_type(aws_sdk_dynamodbstreams::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let records = streams
        .get_records()
        .shard_iterator(iterator)
        .send()
        .await
        .unwrap();
    records
        .records
        .unwrap_or_default()
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
async fn retry_touches_a_received_request_so_the_stream_emits_it_again() {
    let (table, store) = requests_table().await;
    let now = Utc::now();
    let before = item("r-received", RequestState::Received, 2, now);
    put(&store, &before).await;
    assert_eq!(stream_records(&table, "r-received").await, 1);
    let sender = sender(no_concur());
    let report = retry_command(&store, &sender, "r-received", false, DAYS)
        .await
        .unwrap();
    assert_eq!(report.action, Action::Touched);
    let after = get(&store, "r-received").await;
    assert_eq!(after.state, RequestState::Received);
    assert_eq!(after.attempt, 2);
    assert_ne!(after.updated_at, before.updated_at);
    assert_eq!(after.request_token, before.request_token);
    assert_eq!(stream_records(&table, "r-received").await, 2);
}

#[tokio::test]
async fn retry_of_a_reported_request_has_nothing_to_do_and_an_unknown_one_is_an_error() {
    let (_, store) = requests_table().await;
    let now = Utc::now();
    let done = reported("r-done", 1, ConnectionStatus::Connected, now);
    put(&store, &done).await;
    let sender = sender(no_concur());
    let report = retry_command(&store, &sender, "r-done", false, DAYS)
        .await
        .unwrap();
    assert_eq!(report.action, Action::NothingToRetry);
    assert!(
        report.message.contains("nothing to retry"),
        "{}",
        report.message
    );
    assert_eq!(get(&store, "r-done").await, done);

    let missing = retry_command(&store, &sender, "r-missing", false, DAYS)
        .await
        .unwrap_err();
    assert!(
        missing.to_string().contains("not in the requests table"),
        "{missing}"
    );
    let lenient = retry(&store, &sender, "r-missing", false, DAYS)
        .await
        .unwrap();
    assert_eq!(lenient.action, Action::NotFound);
}

#[tokio::test]
async fn retry_resends_a_decided_status_to_concur_as_is_and_records_it_reported() {
    let (_, store) = requests_table().await;
    let sandbox = spawn(Config::for_tests()).await.unwrap();
    let http = reqwest::Client::new();
    let created = http
        .post(sandbox.url("/_sandbox/users"))
        .json(&serde_json::json!({"count": 1}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());

    // Read the queue like the poller, so the request is outstanding.
    let env = concur_env(&sandbox.local_url);
    let concur = ConcurSettings::from_env(&env)
        .unwrap()
        .client(&testing::sdk_config(), &env)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let page = concur.list_page(10, None, deadline).await.unwrap();
    assert_eq!(page.items.len(), 1);
    let id = page.items[0].id.clone();

    let now = Utc::now();
    put(
        &store,
        &decided(
            &id,
            ConnectionStatus::AccountNotFound,
            now - Duration::minutes(20),
            now,
        ),
    )
    .await;
    let sender = sender(env);
    let report = retry_command(&store, &sender, &id, false, DAYS)
        .await
        .unwrap();
    assert_eq!(report.action, Action::Resent);
    assert_eq!(report.status.as_deref(), Some("CREU1"));

    let view: Value = http
        .get(sandbox.url(&format!("/_sandbox/requests/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let history = view["history"].as_array().cloned().unwrap_or_default();
    let accepted: Vec<&str> = history
        .iter()
        .filter(|p| p["accepted"].as_bool() == Some(true))
        .filter_map(|p| p["status"].as_str())
        .collect();
    assert_eq!(accepted, ["CREU1"], "{view}");

    let after = get(&store, &id).await;
    assert_eq!(after.state, RequestState::Reported);
    assert_eq!(after.history.len(), 1);
    assert_eq!(after.history[0].status, ConnectionStatus::AccountNotFound);
    assert_eq!(after.request_token, None, "personal data and token removed");
    assert!(after.expires_at.is_some());

    // Concur no longer has it outstanding: a decided item for it is recorded as reported.
    let gone = format!("{id}-gone");
    put(&store, &decided(&gone, ConnectionStatus::Retry, now, now)).await;
    let report = retry_command(&store, &sender, &gone, false, DAYS)
        .await
        .unwrap();
    assert_eq!(
        report.action,
        Action::RecordedNotOutstanding,
        "{}",
        report.message
    );
    assert_eq!(get(&store, &gone).await.state, RequestState::Reported);
    sandbox.shutdown().await.unwrap();
}

#[tokio::test]
async fn retry_of_a_decided_request_without_concur_settings_says_what_is_missing() {
    let (_, store) = requests_table().await;
    let now = Utc::now();
    put(
        &store,
        &decided("r-nocfg", ConnectionStatus::AccountNotFound, now, now),
    )
    .await;
    let sender = sender(no_concur());
    let error = retry_command(&store, &sender, "r-nocfg", false, DAYS)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("CONCUR_API_BASE_URL"), "{error}");
    assert_eq!(get(&store, "r-nocfg").await.state, RequestState::Decided);
}
