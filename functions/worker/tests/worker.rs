//! The worker against moto (requests, members and connections tables, KMS) and the
//! Concur sandbox, for every outcome and every way a record can be delivered.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use secrecy::SecretString;
use serde_json::json;
use tokio::time::Instant;
use triplink_shared::concur::{ConcurClient, ConcurError, UserTokens};
use triplink_shared::members::http::{HttpDirectoryConfig, HttpMemberDirectory};
use triplink_shared::model::{ConnectionRequest, ConnectionStatus};
use triplink_shared::store::layout::RequestState;
use triplink_shared::store::{lifecycle, ReportResult, RequestStore, WorkStore};
use triplink_shared::testing;
use worker::decision::Leave;
use worker::{ConcurPort, RecordOutcome};

#[tokio::test]
async fn every_seeded_case_gets_its_expected_status_exactly_once() {
    let env = setup(40).await;
    let worker = worker(&env, &env.concur, &env.members);
    let batch = records(&testing::scan_requests(&env.store).await);
    assert_eq!(batch.len(), 40);
    let response = worker
        .process_batch(&batch, "invocation-1", lambda_deadline_ms())
        .await;
    assert!(
        response.batch_item_failures.is_empty(),
        "{:?}",
        response.batch_item_failures
    );

    let mut by_status: HashMap<String, usize> = HashMap::new();
    for item in testing::scan_requests(&env.store).await {
        assert_eq!(item.state, RequestState::Reported, "{}", item.request_id);
        let status = item.history.last().unwrap().status.as_str().to_owned();
        assert_eq!(
            Some(&status),
            env.expected.get(&item.request_id),
            "request {} ({:?})",
            item.request_id,
            item.history
        );
        assert!(
            item.last_name.is_none() && item.request_token.is_none(),
            "personal data removed"
        );
        assert!(item.expires_at.is_some(), "TTL set");
        let (accepted, rejected) = puts(&env.sandbox, &item.request_id).await;
        assert_eq!((accepted, rejected), (vec![status.clone()], 0));
        *by_status.entry(status).or_default() += 1;
    }
    for status in ["CRSUC", "CREU1", "CREU2", "CREU3"] {
        assert!(
            by_status.get(status).copied().unwrap_or(0) > 0,
            "{status}: {by_status:?}"
        );
    }
    // Every matched member has a stored connection.
    let connected = by_status["CRSUC"];
    let count = env.vault_count().await;
    assert_eq!(count, connected);
}

#[tokio::test]
async fn duplicated_records_report_once() {
    let env = setup(6).await;
    let worker = worker(&env, &env.concur, &env.members);
    let item = testing::scan_requests(&env.store).await.remove(0);
    let twice = vec![record(&item, "INSERT", 1), record(&item, "MODIFY", 2)];
    let response = worker
        .process_batch(&twice, "inv-a", lambda_deadline_ms())
        .await;
    assert!(response.batch_item_failures.is_empty());
    let again = deliver(&worker, &item, 1, "inv-b").await;
    assert_eq!(again, RecordOutcome::AlreadyDone);
    let (accepted, rejected) = puts(&env.sandbox, &item.request_id).await;
    assert_eq!((accepted.len(), rejected), (1, 0));
}

#[tokio::test]
async fn the_workers_own_updates_and_removals_are_ignored() {
    let env = setup(3).await;
    let worker = worker(&env, &env.concur, &env.members);
    let mut item = testing::scan_requests(&env.store).await.remove(0);
    let remove = record(&item, "REMOVE", 1);
    item.state = RequestState::Working;
    let working = record(&item, "MODIFY", 2);
    for (r, why) in [(remove, "removed"), (working, "not received")] {
        let outcome = worker
            .process(&r, "inv", lambda_deadline_ms(), far())
            .await
            .unwrap();
        assert_eq!(outcome, RecordOutcome::Ignored(why));
    }
    assert_eq!(puts(&env.sandbox, &item.request_id).await.0.len(), 0);
}

/// A Concur whose status PUTs fail for chosen requests (the rest pass through).
struct FailingPut<'a> {
    inner: &'a ConcurClient,
    fail_ids: Mutex<Vec<String>>,
}

impl ConcurPort for FailingPut<'_> {
    async fn exchange(
        &self,
        user_id: &str,
        token: &SecretString,
        deadline: Instant,
    ) -> Result<UserTokens, ConcurError> {
        self.inner.exchange(user_id, token, deadline).await
    }
    async fn report(
        &self,
        id: &str,
        status: ConnectionStatus,
        deadline: Instant,
    ) -> Result<(), ConcurError> {
        if self.fail_ids.lock().unwrap().iter().any(|f| f == id) {
            // A broken connection: no pause asked for.
            return Err(ConcurError::Connection {
                info: triplink_shared::concur::CallInfo::new("update_status"),
                message: "connection reset (test)".into(),
            });
        }
        self.inner.report(id, status, deadline).await
    }
    async fn fetch_request(
        &self,
        id: &str,
        deadline: Instant,
    ) -> Result<ConnectionRequest, ConcurError> {
        self.inner.fetch_request(id, deadline).await
    }
}

/// Run the poller's sweep as it would run `minutes` from now.
async fn sweep_later(env: &Env, minutes: i64) -> lifecycle::SweepSummary {
    lifecycle::sweep(
        &env.store,
        chrono::Utc::now() + chrono::Duration::minutes(minutes),
    )
    .await
}

#[tokio::test]
async fn a_put_that_fails_releases_the_lease_and_the_same_status_is_resent() {
    let env = setup(6).await;
    let item = testing::scan_requests(&env.store).await.remove(0);
    let failing = FailingPut {
        inner: &env.concur,
        fail_ids: Mutex::new(vec![item.request_id.clone()]),
    };
    let first = worker(&env, failing, &env.members);
    let outcome = deliver(&first, &item, 1, "inv-1").await;
    assert_eq!(
        outcome,
        RecordOutcome::Released {
            reason: Leave::ReportFailed { pause: false }
        }
    );
    let decided = env.store.get(&item.request_id).await.unwrap().unwrap();
    assert_eq!(decided.state, RequestState::Decided);
    assert_eq!(decided.puts_sent, 1);
    assert!(
        decided.lease_until.unwrap() <= chrono::Utc::now().timestamp_millis(),
        "the lease is released at once, not left to run out"
    );
    let status = decided.decided_status.unwrap();

    // Lambda delivers the same record again: the attempt is taken over and re-sent.
    let retry = worker(&env, &env.concur, &env.members);
    let outcome = deliver(&retry, &item, 1, "inv-2").await;
    assert_eq!(
        outcome,
        RecordOutcome::Reported {
            status,
            resent: true,
            result: ReportResult::Accepted,
        }
    );
    assert_eq!(
        puts(&env.sandbox, &item.request_id).await,
        (vec![status.as_str().to_owned()], 0)
    );
}

#[tokio::test]
async fn a_503_leaves_the_request_pending_for_five_minutes_then_the_sweep_resends_it() {
    let env = setup(6).await;
    let item = testing::scan_requests(&env.store).await.remove(0);
    let worker = worker(&env, &env.concur, &env.members);
    faults(&env, &["put:503:next=5"]).await;
    let failed = worker
        .process_batch(&[record(&item, "INSERT", 7)], "inv-1", lambda_deadline_ms())
        .await;
    assert!(
        failed.batch_item_failures.is_empty(),
        "the table, not Lambda's retries, holds what is left: nothing goes to the DLQ"
    );
    let released = env.store.get(&item.request_id).await.unwrap().unwrap();
    assert_eq!(released.state, RequestState::Decided);
    let five_minutes = (chrono::Utc::now() + chrono::Duration::seconds(295)).timestamp_millis();
    assert!(released.due_at.unwrap() >= five_minutes, "{released:?}");
    assert_eq!(
        fault_hits(&env).await,
        [1],
        "one PUT, no retry after the 503"
    );
    triplink_shared::testing::http_client()
        .delete(env.sandbox.url("/_sandbox/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        sweep_later(&env, 4).await.rearmed,
        0,
        "not before five minutes"
    );
    let sweep = sweep_later(&env, 6).await;
    // The five other requests of the table were never delivered in this test: after
    // five minutes they are due as well, and re-armed with it.
    assert_eq!((sweep.due, sweep.rearmed), (6, 6), "{sweep:?}");
    let rearmed = env.store.get(&item.request_id).await.unwrap().unwrap();
    assert_eq!(rearmed.state, RequestState::Received);
    assert_eq!(
        rearmed.decided_status, released.decided_status,
        "decision kept"
    );
    assert_eq!(rearmed.redrives, 1);
    let retried = worker
        .process_batch(
            &[record(&rearmed, "MODIFY", 8)],
            "inv-2",
            lambda_deadline_ms(),
        )
        .await;
    assert!(retried.batch_item_failures.is_empty());
    let (accepted, rejected) = puts(&env.sandbox, &item.request_id).await;
    assert_eq!((accepted.len(), rejected), (1, 0));
    let done = env.store.get(&item.request_id).await.unwrap().unwrap();
    assert_eq!(done.state, RequestState::Reported);
    assert_eq!(done.report_result, Some(ReportResult::Accepted));
}

/// How many calls each fault rule in force fired on.
async fn fault_hits(env: &Env) -> Vec<u64> {
    let faults: serde_json::Value = triplink_shared::testing::http_client()
        .get(env.sandbox.url("/_sandbox/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    faults["rules"]
        .as_array()
        .unwrap_or_else(|| panic!("{faults}"))
        .iter()
        .map(|r| r["hits"].as_u64().unwrap())
        .collect()
}

/// A request the seed expects to be connected (so the worker exchanges its token).
async fn a_matched_item(env: &Env) -> triplink_shared::store::layout::RequestItem {
    testing::scan_requests(&env.store)
        .await
        .into_iter()
        .find(|i| env.expected.get(&i.request_id).map(String::as_str) == Some("CRSUC"))
        .unwrap()
}

/// The request is due again no sooner than five minutes from now (Concur's pause).
async fn assert_left_for_five_minutes(env: &Env, id: &str) {
    let left = env.store.get(id).await.unwrap().unwrap();
    let five_minutes = (chrono::Utc::now() + chrono::Duration::seconds(295)).timestamp_millis();
    assert!(left.due_at.unwrap() >= five_minutes, "{left:?}");
}

#[tokio::test]
async fn a_503_on_the_exchange_leaves_the_request_for_five_minutes() {
    let env = setup(20).await;
    let item = a_matched_item(&env).await;
    let worker = worker(&env, &env.concur, &env.members);
    // Warm the app token, so the next token call is the grant itself.
    env.concur.app_token(far()).await.unwrap();
    faults(&env, &["token:503"]).await;
    let outcome = deliver(&worker, &item, 1, "inv-1").await;
    assert_eq!(
        outcome,
        RecordOutcome::Released {
            reason: Leave::TokenExchangeUnanswered { pause: true }
        }
    );
    assert_eq!(
        fault_hits(&env).await,
        [1],
        "one grant, no retry after the 503"
    );
    assert_left_for_five_minutes(&env, &item.request_id).await;
    assert!(puts(&env.sandbox, &item.request_id).await.0.is_empty());
    assert_eq!(
        sweep_later(&env, 4).await.rearmed,
        0,
        "nothing is re-armed before five minutes"
    );
}

#[tokio::test]
async fn an_exchange_without_an_answer_in_time_leaves_the_request_for_five_minutes() {
    let env = setup(20).await;
    let item = a_matched_item(&env).await;
    let mut config = env.concur.config().clone();
    config.call_timeout = Duration::from_millis(300);
    let impatient = ConcurClient::new(config).unwrap();
    impatient.app_token(far()).await.unwrap();
    let worker = worker(&env, &impatient, &env.members);
    faults(&env, &["token:latency=1500"]).await;
    let outcome = deliver(&worker, &item, 1, "inv-1").await;
    assert_eq!(
        outcome,
        RecordOutcome::Released {
            reason: Leave::TokenExchangeUnanswered { pause: true }
        }
    );
    assert_eq!(
        fault_hits(&env).await,
        [1],
        "one grant, no retry after the timeout"
    );
    assert_left_for_five_minutes(&env, &item.request_id).await;
}

#[tokio::test]
async fn a_lost_put_answer_is_not_reported_twice() {
    let env = setup(6).await;
    let item = testing::scan_requests(&env.store).await.remove(0);
    let worker = worker(&env, &env.concur, &env.members);
    // Concur takes the PUT, then the answer is lost: the client's retry finds the
    // request no longer outstanding.
    faults(&env, &["put:500-after:next=1"]).await;
    let outcome = deliver(&worker, &item, 1, "inv").await;
    assert!(
        matches!(
            outcome,
            RecordOutcome::Reported {
                result: ReportResult::AckLost,
                ..
            }
        ),
        "{outcome:?}"
    );
    let (accepted, _) = puts(&env.sandbox, &item.request_id).await;
    assert_eq!(accepted.len(), 1, "one status for the attempt");
    let stored = env.store.get(&item.request_id).await.unwrap().unwrap();
    assert_eq!(stored.state, RequestState::Reported);
    assert_eq!(stored.report_result, Some(ReportResult::AckLost));
    assert_eq!(
        stored.history.last().unwrap().result,
        Some(ReportResult::AckLost)
    );
}

#[tokio::test]
async fn a_404_on_the_first_put_is_not_counted_as_our_status_taken() {
    let env = setup(6).await;
    let item = testing::scan_requests(&env.store).await.remove(0);
    // Another actor pops the request before our first PUT.
    env.concur
        .update_status(&item.request_id, ConnectionStatus::Retry, far())
        .await
        .unwrap();
    let worker = worker(&env, &env.concur, &env.members);
    let outcome = deliver(&worker, &item, 1, "inv").await;
    assert!(
        matches!(
            outcome,
            RecordOutcome::Reported {
                result: ReportResult::NotOutstanding,
                ..
            }
        ),
        "{outcome:?}"
    );
    let stored = env.store.get(&item.request_id).await.unwrap().unwrap();
    assert_eq!(stored.report_result, Some(ReportResult::NotOutstanding));
    assert_eq!(stored.puts_sent, 1);
}

#[tokio::test]
async fn a_live_lease_is_left_alone_and_an_expired_one_is_taken_over() {
    let env = setup(6).await;
    let item = testing::scan_requests(&env.store).await.remove(0);
    let worker = worker(&env, &env.concur, &env.members);
    let now = chrono::Utc::now();
    env.store
        .claim(
            &item.request_id,
            1,
            "someone-else",
            now.timestamp_millis() + 60_000,
            now,
        )
        .await
        .unwrap();
    let busy = deliver(&worker, &item, 3, "inv").await;
    assert!(
        matches!(busy, RecordOutcome::Busy { .. }),
        "left to the holder (or the sweep), not a batch failure: {busy:?}"
    );
    assert!(puts(&env.sandbox, &item.request_id).await.0.is_empty());

    // The other worker died; its lease runs out.
    let other = testing::scan_requests(&env.store).await.remove(1);
    env.store
        .claim(
            &other.request_id,
            1,
            "dead-worker",
            now.timestamp_millis() - 1,
            now,
        )
        .await
        .unwrap();
    let outcome = deliver(&worker, &other, 4, "inv").await;
    assert!(
        matches!(outcome, RecordOutcome::Reported { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn the_http_directory_down_sends_nothing_and_leaves_the_requests_pending() {
    let env = setup(3).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let down = HttpMemberDirectory::new(HttpDirectoryConfig {
        base_url: url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
        timeout: Duration::from_millis(300),
        auth_header: None,
    })
    .unwrap();
    let worker = worker(&env, &env.concur, down);
    let batch = records(&testing::scan_requests(&env.store).await);
    let response = worker
        .process_batch(&batch, "inv", lambda_deadline_ms())
        .await;
    assert!(response.batch_item_failures.is_empty());
    for item in testing::scan_requests(&env.store).await {
        assert_eq!(item.state, RequestState::Working, "{item:?}");
        assert!(item.decided_status.is_none(), "nothing decided: {item:?}");
        assert!(item.due_at.is_some(), "the sweep re-arms it later");
        assert!(
            puts(&env.sandbox, &item.request_id).await.0.is_empty(),
            "no attempt of the user's spent"
        );
    }
}

/// The sandbox's record of a request's token submissions: (token number, accepted).
async fn exchange_attempts(env: &Env, id: &str) -> Vec<(u64, bool)> {
    let view: serde_json::Value = triplink_shared::testing::http_client()
        .get(env.sandbox.url(&format!("/_sandbox/requests/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    view["exchange_attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["token_number"].as_u64().unwrap(),
                a["ok"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_expired_request_token_is_read_again_once_and_the_current_one_connects() {
    let env = setup(20).await;
    // A day and an hour later, the tokens issued by the poll have expired.
    triplink_shared::testing::http_client()
        .post(env.sandbox.url("/_sandbox/clock/advance"))
        .json(&json!({"seconds": 25 * 3600}))
        .send()
        .await
        .unwrap();
    let worker = worker(&env, &env.concur, &env.members);
    let item = a_matched_item(&env).await;
    let outcome = deliver(&worker, &item, 1, "inv").await;
    assert!(
        matches!(
            outcome,
            RecordOutcome::Reported {
                status: ConnectionStatus::Connected,
                ..
            }
        ),
        "{outcome:?}"
    );
    let attempts = exchange_attempts(&env, &item.request_id).await;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert!(!attempts[0].1 && attempts[1].1, "{attempts:?}");
    assert_ne!(attempts[0].0, attempts[1].0, "{attempts:?}");
}

/// A Concur that refuses every request token with OAuth code 103 (and counts the
/// submissions); the rest goes to the sandbox.
struct RefusingExchange<'a> {
    inner: &'a ConcurClient,
    submitted: Mutex<Vec<String>>,
}

impl ConcurPort for RefusingExchange<'_> {
    async fn exchange(
        &self,
        _user_id: &str,
        token: &SecretString,
        _deadline: Instant,
    ) -> Result<UserTokens, ConcurError> {
        use secrecy::ExposeSecret;
        self.submitted
            .lock()
            .unwrap()
            .push(token.expose_secret().to_owned());
        Err(ConcurError::OAuth {
            info: triplink_shared::concur::CallInfo::new("token"),
            error: Box::new(triplink_shared::concur::OAuthError {
                code: Some(103),
                error: Some("invalid_request".into()),
                ..Default::default()
            }),
        })
    }
    async fn report(
        &self,
        id: &str,
        status: ConnectionStatus,
        deadline: Instant,
    ) -> Result<(), ConcurError> {
        self.inner.report(id, status, deadline).await
    }
    async fn fetch_request(
        &self,
        id: &str,
        deadline: Instant,
    ) -> Result<ConnectionRequest, ConcurError> {
        self.inner.fetch_request(id, deadline).await
    }
}

#[tokio::test]
async fn a_refused_token_is_read_again_at_most_once_then_crret() {
    let env = setup(20).await;
    let concur = RefusingExchange {
        inner: &env.concur,
        submitted: Mutex::new(Vec::new()),
    };
    let worker = worker(&env, &concur, &env.members);
    let item = a_matched_item(&env).await;
    let outcome = deliver(&worker, &item, 1, "inv").await;
    assert!(
        matches!(
            outcome,
            RecordOutcome::Reported {
                status: ConnectionStatus::Retry,
                ..
            }
        ),
        "{outcome:?}"
    );
    let submitted = concur.submitted.lock().unwrap().clone();
    assert_eq!(submitted.len(), 2, "one submission, one after the re-read");
    assert_eq!(Some(submitted[0].as_str()), item.request_token.as_deref());
    assert_ne!(submitted[0], submitted[1]);
    let stored = env.store.get(&item.request_id).await.unwrap().unwrap();
    let last = stored.history.last().unwrap();
    assert_eq!(last.reason.as_deref(), Some("token_exchange_failed:oauth"));
    assert_eq!(
        puts(&env.sandbox, &item.request_id).await,
        (vec!["CRRET".to_owned()], 0)
    );
}

#[tokio::test]
async fn a_token_superseded_by_a_later_get_is_read_again_not_reported_crret() {
    // Every GET issues a new request token and kills the earlier ones.
    let env = setup_with(20, |c| c.supersede_request_tokens = true).await;
    let item = a_matched_item(&env).await;
    // A poll overlapping the worker reads the request again: the token in the item
    // (read when the request was polled) is dead.
    env.concur.get(&item.request_id, far()).await.unwrap();
    let worker = worker(&env, &env.concur, &env.members);
    let outcome = deliver(&worker, &item, 1, "inv").await;
    assert!(
        matches!(
            outcome,
            RecordOutcome::Reported {
                status: ConnectionStatus::Connected,
                ..
            }
        ),
        "{outcome:?}"
    );
    let attempts = exchange_attempts(&env, &item.request_id).await;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert!(!attempts[0].1, "the stale token is refused: {attempts:?}");
    assert!(attempts[1].1, "the re-read token connects: {attempts:?}");
    assert_eq!(
        puts(&env.sandbox, &item.request_id).await,
        (vec!["CRSUC".to_owned()], 0)
    );
    let stored = env.store.get(&item.request_id).await.unwrap().unwrap();
    assert_ne!(
        stored.request_token, item.request_token,
        "the fresh token was recorded"
    );
    assert_eq!(env.vault_count().await, 1);
}

#[tokio::test]
async fn one_record_the_store_cannot_serve_fails_only_from_its_sequence_number() {
    use triplink_shared::fault_proxy::{FaultProxy, Op, Rule};
    let env = setup(6).await;
    let all = testing::scan_requests(&env.store).await;
    // DynamoDB throttles every write of one request (the SDK's own retries included).
    let proxy = FaultProxy::start(&testing::moto().endpoint);
    let throttled = proxy.add(
        Rule::new(Op::UpdateItem)
            .body_contains(all[2].request_id.clone())
            .throttle(),
    );
    let proxied = triplink_shared::store::DynamoRequestStore::new(
        aws_sdk_dynamodb::Client::new(&testing::local_sdk_config(proxy.endpoint())),
        env.store.table(),
    );
    let worker_through_proxy = worker::Worker {
        concur: &env.concur,
        directory: &env.members,
        store: &proxied,
        vault: &env.vault,
        settings: settings(),
        metrics: triplink_shared::telemetry::Metrics::disabled("worker"),
        safety: Default::default(),
    };
    let batch = records(&all);
    let response = worker_through_proxy
        .process_batch(&batch, "inv", lambda_deadline_ms())
        .await;
    assert!(proxy.fired(throttled) > 0);
    assert_eq!(response.batch_item_failures.len(), 1);
    assert_eq!(
        response.batch_item_failures[0].item_identifier,
        batch[2].change.sequence_number
    );
    let after = testing::scan_requests(&env.store).await;
    for (i, item) in after.iter().enumerate() {
        let want = if i == 2 {
            RequestState::Received
        } else {
            RequestState::Reported
        };
        assert_eq!(item.state, want, "{}", item.request_id);
    }
    // Lambda retries from the failed record once DynamoDB recovers: the rest are done
    // and stay done.
    proxy.clear();
    let retry = worker_through_proxy
        .process_batch(&batch[2..], "inv-2", lambda_deadline_ms())
        .await;
    assert!(retry.batch_item_failures.is_empty());
    for item in testing::scan_requests(&env.store).await {
        assert_eq!(item.state, RequestState::Reported);
        assert_eq!(puts(&env.sandbox, &item.request_id).await.0.len(), 1);
    }
}

/// The grant consumes the single-use request token: when Concur performs it but the
/// answer is lost, the token is never submitted again; the next holder reads a fresh
/// one by id and connects with it.
#[tokio::test]
async fn a_grant_whose_answer_is_lost_is_not_repeated_with_the_same_token() {
    let env = setup(20).await;
    let matched: Vec<_> = testing::scan_requests(&env.store)
        .await
        .into_iter()
        .filter(|i| env.expected.get(&i.request_id).map(String::as_str) == Some("CRSUC"))
        .take(1)
        .collect();
    let item = matched[0].clone();
    let worker = worker(&env, &env.concur, &env.members);
    // Warm the app token, so the next token call is the grant itself.
    env.concur.app_token(far()).await.unwrap();
    faults(&env, &["token:drop-after:next=1"]).await;
    let outcome = deliver(&worker, &item, 1, "inv-1").await;
    assert_eq!(
        outcome,
        RecordOutcome::Released {
            reason: Leave::TokenExchangeUnanswered { pause: false }
        }
    );
    let left = env.store.get(&item.request_id).await.unwrap().unwrap();
    assert!(left.exchange_started_at.is_some());
    assert!(puts(&env.sandbox, &item.request_id).await.0.is_empty());

    let sweep = sweep_later(&env, 1).await;
    assert!(sweep.rearmed >= 1, "{sweep:?}");
    let rearmed = env.store.get(&item.request_id).await.unwrap().unwrap();
    let outcome = worker
        .process(
            &record(&rearmed, "MODIFY", 2),
            "inv-2",
            lambda_deadline_ms(),
            far(),
        )
        .await
        .unwrap();
    assert!(
        matches!(
            outcome,
            RecordOutcome::Reported {
                status: ConnectionStatus::Connected,
                ..
            }
        ),
        "{outcome:?}"
    );
    let view: serde_json::Value = triplink_shared::testing::http_client()
        .get(
            env.sandbox
                .url(&format!("/_sandbox/requests/{}", item.request_id)),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tokens: Vec<u64> = view["exchange_attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["token_number"].as_u64().unwrap())
        .collect();
    assert_eq!(tokens.len(), 2, "{view}");
    assert_ne!(tokens[0], tokens[1], "never the same token twice: {view}");
    assert_eq!(
        puts(&env.sandbox, &item.request_id).await,
        (vec!["CRSUC".to_owned()], 0)
    );
}
