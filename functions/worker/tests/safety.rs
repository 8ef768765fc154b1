//! Statuses a traveller would get by mistake, and the guards against them (issue 11):
//! the directory health gate, the circuit breaker, a refused app, dry-run mode. Against
//! the sandbox and moto_server; each test counts what Concur really received.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::*;
use secrecy::SecretString;
use triplink_shared::concur::{BaseUrl, ConcurClient, ConcurConfig, RetryPolicy};
use triplink_shared::members::dynamo::DynamoMemberDirectory;
use triplink_shared::store::layout::{members as attr, RequestItem, RequestState};
use triplink_shared::store::{tables, RequestStore};
use triplink_shared::telemetry::Metrics;
use triplink_shared::testing;
use worker::decision::Leave;
use worker::{breaker, RecordOutcome};

/// Every status any request received at the sandbox (accepted or not).
async fn statuses_sent(env: &Env) -> Vec<String> {
    sandbox_requests(&env.sandbox)
        .await
        .iter()
        .flat_map(|r| r["history"].as_array().cloned().unwrap_or_default())
        .map(|p| p["status"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn expected_creu(env: &Env, item: &RequestItem) -> bool {
    env.expected
        .get(&item.request_id)
        .is_some_and(|s| s.starts_with("CREU"))
}

#[tokio::test]
async fn day_one_an_empty_members_table_sends_no_creu() {
    let env = setup(24).await;
    let client = testing::dynamodb();
    let empty = testing::unique_name("members-empty");
    tables::create_members_table(&client, &empty).await.unwrap();
    let directory = DynamoMemberDirectory::new(client, empty);
    let worker = worker(&env, &env.concur, &directory);
    let items = testing::scan_requests(&env.store).await;
    assert!(items.len() >= 20);
    for (i, item) in items.iter().enumerate() {
        let outcome = deliver(&worker, item, i as u64 + 1, "inv-1").await;
        // With no member anywhere every request would be CREU1: none is decided.
        assert_eq!(
            outcome,
            RecordOutcome::Released {
                reason: Leave::DirectoryNotReady
            },
            "{}",
            item.request_id
        );
        let left = env.store.get(&item.request_id).await.unwrap().unwrap();
        assert_eq!(left.state, RequestState::Working);
        assert_eq!(left.decided_status, None);
        assert!(left.due_at.is_some(), "re-driven later");
    }
    assert_eq!(statuses_sent(&env).await, Vec::<String>::new());
}

#[tokio::test]
async fn members_without_a_manifest_connect_but_decide_no_creu() {
    let env = setup(24).await;
    // The members are there, but nothing says the directory is complete.
    env.members
        .client
        .delete_item()
        .table_name(&env.members.table)
        .key(
            attr::MEMBER_ID,
            aws_sdk_dynamodb::types::AttributeValue::S(attr::MANIFEST_ID.into()),
        )
        .send()
        .await
        .unwrap();
    let worker = worker(&env, &env.concur, &env.members);
    let items = testing::scan_requests(&env.store).await;
    let (mut connected, mut held) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let expected = env.expected[&item.request_id].clone();
        let outcome = deliver(&worker, item, i as u64 + 1, "inv-1").await;
        match outcome {
            // Finding the member is positive evidence: the gate does not apply.
            RecordOutcome::Reported { status, .. } => {
                assert_eq!(status.as_str(), expected);
                assert!(
                    !expected_creu(&env, item),
                    "{expected} sent without a manifest"
                );
                connected += 1;
            }
            RecordOutcome::Released {
                reason: Leave::DirectoryNotReady,
            } => {
                assert!(expected_creu(&env, item), "{expected} held");
                held += 1;
            }
            other => panic!("{}: {other:?}", item.request_id),
        }
    }
    assert!(
        connected > 0 && held > 0,
        "{connected} connected, {held} held"
    );
    assert!(statuses_sent(&env)
        .await
        .iter()
        .all(|s| !s.starts_with("CREU")));

    // The import's manifest lands: a new execution environment decides them.
    env.members.refresh_manifest(Utc::now()).await.unwrap();
    let fresh = common::worker(&env, &env.concur, &env.members);
    let summary = triplink_shared::store::lifecycle::sweep(
        &env.store,
        Utc::now() + chrono::Duration::minutes(5),
    )
    .await;
    assert_eq!(summary.rearmed, held, "{summary:?}");
    let rearmed: Vec<_> = testing::scan_requests(&env.store)
        .await
        .into_iter()
        .filter(|i| i.state == RequestState::Received)
        .collect();
    fresh
        .process_batch(&records(&rearmed), "inv-2", lambda_deadline_ms())
        .await;
    audit(&env).await.assert_clean();
}

#[tokio::test]
async fn a_failing_concur_opens_the_breaker_and_no_status_is_spent() {
    let env = setup(30).await;
    // Decided statuses are ready; then every PUT fails with a 500 (retried, then given up).
    faults(&env, &["put:500"]).await;
    let mut worker = worker(&env, &env.concur, &env.members);
    worker.settings.concurrency = 1;
    let items = testing::scan_requests(&env.store).await;
    let started = Utc::now();
    worker
        .process_batch(&records(&items), "inv-1", lambda_deadline_ms())
        .await;
    assert_eq!(statuses_sent(&env).await, Vec::<String>::new());
    assert!(worker.safety.breaker.open(Utc::now()).is_some());
    let after = testing::scan_requests(&env.store).await;
    // The token exchanges and matches happened before the PUTs failed: the decisions
    // are kept. Only MIN_FAILURES requests reached Concur's PUT; the rest waited.
    let soon = started + chrono::Duration::minutes(1);
    let tried: Vec<_> = after
        .iter()
        .filter(|i| i.puts_sent > 0)
        .map(|i| i.request_id.clone())
        .collect();
    assert_eq!(tried.len(), breaker::MIN_FAILURES, "{tried:?}");
    for item in &after {
        assert_ne!(item.state, RequestState::Reported);
        let due = item.due_at.expect("every item is re-driven later");
        if item.puts_sent > 0 {
            assert!(
                due < soon.timestamp_millis(),
                "report_failed backs off briefly"
            );
        } else {
            assert!(
                due >= (started + breaker::COOL_DOWN).timestamp_millis(),
                "{}: held for the cool-down",
                item.request_id
            );
        }
    }
}

#[tokio::test]
async fn a_refused_app_spends_no_crret() {
    let env = setup(20).await;
    let mut config = ConcurConfig::new(
        BaseUrl::parse(&env.sandbox.local_url).unwrap(),
        "sandbox-client",
        SecretString::from("rotated-away"),
    );
    config.retry = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
    };
    let wrong = ConcurClient::new(config).unwrap();
    let mut worker = worker(&env, &wrong, &env.members);
    worker.metrics = Metrics::tallied("worker");
    let matched: Vec<_> = testing::scan_requests(&env.store)
        .await
        .into_iter()
        .filter(|i| env.expected[&i.request_id] == "CRSUC")
        .collect();
    assert!(matched.len() >= 2);
    // As Lambda delivers it: logged and counted (alarm `app-credentials-rejected`).
    let response = worker
        .process_batch(
            &[record(&matched[0], "INSERT", 1)],
            "inv-0",
            lambda_deadline_ms(),
        )
        .await;
    assert!(response.batch_item_failures.is_empty());
    let totals = worker.metrics.totals();
    assert_eq!(
        totals.get("AppCredentialsRejected"),
        Some(&1.0),
        "{totals:?}"
    );
    assert_eq!(totals.get("Released"), Some(&1.0), "{totals:?}");
    for (i, item) in matched.iter().enumerate().skip(1) {
        let outcome = deliver(&worker, item, i as u64 + 1, "inv-1").await;
        assert_eq!(
            outcome,
            RecordOutcome::Released {
                reason: Leave::AppCredentialsRejected
            }
        );
        let left = env.store.get(&item.request_id).await.unwrap().unwrap();
        assert!(
            left.due_at.unwrap() >= (Utc::now() + chrono::Duration::minutes(4)).timestamp_millis()
        );
    }
    assert_eq!(statuses_sent(&env).await, Vec::<String>::new());
}

#[tokio::test]
async fn dry_run_records_every_decision_and_sends_nothing() {
    let env = setup(30).await;
    let mut worker = worker(&env, &env.concur, &env.members);
    worker.settings.dry_run = true;
    let items = testing::scan_requests(&env.store).await;
    worker
        .process_batch(&records(&items), "inv-1", lambda_deadline_ms())
        .await;
    assert_eq!(statuses_sent(&env).await, Vec::<String>::new());
    assert_eq!(env.vault_count().await, 0, "no token exchanged");
    for item in testing::scan_requests(&env.store).await {
        let expected = &env.expected[&item.request_id];
        assert_eq!(
            item.dry_run_status.map(|s| s.as_str().to_owned()).as_ref(),
            Some(expected),
            "{}",
            item.request_id
        );
        assert_eq!(item.parked_reason.as_deref(), Some("dry_run"));
        assert_eq!(item.state, RequestState::Working);
        assert_eq!((item.due_at, item.decided_status), (None, None));
        assert!(item.exchange_started_at.is_none());
    }
    // The sweep leaves them alone, whatever the time.
    let summary = triplink_shared::store::lifecycle::sweep(
        &env.store,
        Utc::now() + chrono::Duration::days(1),
    )
    .await;
    assert_eq!(summary.rearmed, 0, "{summary:?}");
    // A second delivery of the same records changes nothing and sends nothing.
    worker
        .process_batch(&records(&items), "inv-2", lambda_deadline_ms())
        .await;
    assert_eq!(statuses_sent(&env).await, Vec::<String>::new());
}

/// A second member record fitting a request that matched one member.
async fn twin_of(env: &Env, item: &RequestItem, by_loyalty: bool) {
    let twin = triplink_shared::members::Member {
        member_id: format!("TWIN-{}", item.request_id),
        loyalty_number: if by_loyalty {
            item.loyalty_number.clone()
        } else {
            None
        },
        first_name: None,
        last_name: item.last_name.clone().unwrap_or_default(),
        emails: if by_loyalty {
            Vec::new()
        } else {
            item.emails.clone()
        },
        status: triplink_shared::members::MemberStatus::Active,
    };
    env.members.put_member(&twin).await.unwrap();
}

#[tokio::test]
async fn two_members_fitting_one_request() {
    let env = setup(40).await;
    let items = testing::scan_requests(&env.store).await;
    let matched = |with_number: bool| {
        items
            .iter()
            .find(|i| {
                env.expected[&i.request_id] == "CRSUC"
                    && i.loyalty_number.is_some() == with_number
                    && (with_number || !i.emails.is_empty())
            })
            .cloned()
            .expect("a seeded match of this kind")
    };
    let (by_number, by_email) = (matched(true), matched(false));
    twin_of(&env, &by_number, true).await;
    twin_of(&env, &by_email, false).await;
    let worker = worker(&env, &env.concur, &env.members);

    // One loyalty number, two records: the supplier's data is wrong; no status, parked.
    let outcome = deliver(&worker, &by_number, 1, "inv-1").await;
    assert_eq!(
        outcome,
        RecordOutcome::Parked {
            reason: triplink_shared::store::lifecycle::ParkReason::DuplicateLoyaltyNumber
        }
    );
    assert_eq!(
        puts(&env.sandbox, &by_number.request_id).await.0,
        Vec::<String>::new()
    );
    let parked = env.store.get(&by_number.request_id).await.unwrap().unwrap();
    assert_eq!(
        parked.parked_reason.as_deref(),
        Some("duplicate_loyalty_number")
    );

    // One verified address shared by two members of one name: the traveller must
    // single one out (give the loyalty number): CREU3, "needs attention".
    let outcome = deliver(&worker, &by_email, 2, "inv-1").await;
    assert!(
        matches!(outcome, RecordOutcome::Reported { status, .. } if status.as_str() == "CREU3"),
        "{outcome:?}"
    );
    assert_eq!(
        puts(&env.sandbox, &by_email.request_id).await.0,
        vec!["CREU3".to_owned()]
    );
    assert_eq!(env.vault_count().await, 0, "no token exchanged for either");
}

/// The invocation's deadline comes before a request could be handled: it stays pending
/// (delivered again after a backoff), never `CRRET`; and a deadline says nothing about
/// Concur, so it never opens the circuit breaker.
#[tokio::test]
async fn the_deadline_leaves_requests_pending_never_crret() {
    let env = setup(20).await;
    let worker = worker(&env, &env.concur, &env.members);
    let items = testing::scan_requests(&env.store).await;
    assert!(items.len() > breaker::MIN_FAILURES);
    for (i, item) in items.iter().enumerate() {
        let outcome = worker
            .process(
                &record(item, "INSERT", i as u64 + 1),
                "inv-1",
                lambda_deadline_ms(),
                tokio::time::Instant::now(),
            )
            .await
            .unwrap();
        assert_eq!(
            outcome,
            RecordOutcome::Released {
                reason: Leave::Deadline
            },
            "{}",
            item.request_id
        );
        let left = env.store.get(&item.request_id).await.unwrap().unwrap();
        assert_ne!(left.state, RequestState::Reported);
        assert!(left.due_at.is_some(), "delivered again later");
    }
    assert_eq!(statuses_sent(&env).await, Vec::<String>::new());
    // The same outcomes through a batch: the breaker stays closed.
    let batch = testing::scan_requests(&env.store).await;
    worker
        .process_batch(
            &records(&batch),
            "inv-2",
            chrono::Utc::now().timestamp_millis(),
        )
        .await;
    assert!(worker.safety.breaker.open(Utc::now()).is_none());
    assert_eq!(statuses_sent(&env).await, Vec::<String>::new());
}
