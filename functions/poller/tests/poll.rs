//! The poller against the Concur sandbox (in process, on loopback) and a real local
//! DynamoDB (moto_server).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use concur_sandbox::{spawn, Config, Sandbox};
use poller::{poll, PendingSource, PollSummary, PollerSettings, StopReason};
use secrecy::SecretString;
use serde_json::json;
use tokio::time::Instant;
use triplink_shared::concur::{
    BaseUrl, ConcurClient, ConcurConfig, ConcurError, Page, RetryPolicy,
};
use triplink_shared::model::ConnectionStatus;
use triplink_shared::store::layout::{RequestItem, RequestState};
use triplink_shared::store::{tables, DynamoRequestStore, RequestStore};
use triplink_shared::testing;

async fn sandbox(users: usize, tweak: impl FnOnce(&mut Config)) -> Sandbox {
    let mut config = Config::for_tests();
    config.users = users;
    tweak(&mut config);
    spawn(config).await.expect("sandbox starts")
}

fn client(sandbox: &Sandbox) -> ConcurClient {
    let mut config = ConcurConfig::new(
        BaseUrl::parse(&sandbox.local_url).unwrap(),
        "sandbox-client",
        SecretString::from("sandbox-secret"),
    );
    config.retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    };
    ConcurClient::new(config).unwrap()
}

async fn store() -> DynamoRequestStore {
    let client = testing::dynamodb();
    let table = testing::unique_name("poller");
    tables::create_requests_table(&client, &table)
        .await
        .unwrap();
    DynamoRequestStore::new(client, table)
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(120)
}

fn settings() -> PollerSettings {
    PollerSettings {
        max_pages: 500,
        deadline_margin: Duration::from_millis(200),
        ..PollerSettings::default()
    }
}

async fn admin(sandbox: &Sandbox, path: &str, body: serde_json::Value) {
    let response = triplink_shared::testing::http_client()
        .post(sandbox.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
}

fn assert_each_stored_once(items: &[RequestItem], expected: usize) {
    assert_eq!(items.len(), expected);
    let mut ids: Vec<_> = items.iter().map(|i| i.request_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), expected, "ids are unique");
    assert!(items
        .iter()
        .all(|i| i.attempt == 1 && i.state == RequestState::Received));
    assert!(items.iter().all(|i| i.request_token.is_some()));
}

#[tokio::test]
async fn drains_35_and_a_second_run_finds_nothing_new() {
    let sandbox = sandbox(35, |_| {}).await;
    let (concur, store) = (client(&sandbox), store().await);
    let first = poll(&concur, &store, &settings(), far()).await.unwrap();
    assert_eq!(
        (
            first.pages,
            first.seen,
            first.new,
            first.failed,
            first.stop_reason
        ),
        (4, 35, 35, 0, StopReason::Drained),
        "{first:?}"
    );
    assert_each_stored_once(&testing::scan_requests(&store).await, 35);

    let second = poll(&concur, &store, &settings(), far()).await.unwrap();
    assert_eq!(
        (second.seen, second.new, second.requeued),
        (35, 0, 0),
        "{second:?}"
    );
    assert_eq!(second.token_refreshed + second.unchanged, 35);
    assert_each_stored_once(&testing::scan_requests(&store).await, 35);
}

#[tokio::test]
async fn drains_1000() {
    let sandbox = sandbox(1000, |_| {}).await;
    let (concur, store) = (client(&sandbox), store().await);
    let summary = poll(&concur, &store, &settings(), far()).await.unwrap();
    assert_eq!(
        (
            summary.pages,
            summary.seen,
            summary.new,
            summary.stop_reason
        ),
        (100, 1000, 1000, StopReason::Drained),
        "{summary:?}"
    );
    assert_each_stored_once(&testing::scan_requests(&store).await, 1000);
}

/// Stand in for the worker: report a status to Concur and record it as reported.
async fn report(
    concur: &ConcurClient,
    store: &DynamoRequestStore,
    id: &str,
    status: ConnectionStatus,
) {
    concur.update_status(id, status, far()).await.unwrap();
    let mut item = store.get(id).await.unwrap().unwrap();
    item.state = RequestState::Reported;
    item.request_token = None;
    item.reported_at = Some(triplink_shared::store::layout::timestamp(chrono::Utc::now()));
    item.due_at = None;
    testing::put_request(store, &item).await;
}

#[tokio::test]
async fn a_creu1_request_returns_24_virtual_hours_later_as_a_new_attempt() {
    let sandbox = sandbox(5, |_| {}).await;
    let (concur, store) = (client(&sandbox), store().await);
    poll(&concur, &store, &settings(), far()).await.unwrap();
    let id = testing::scan_requests(&store).await[0].request_id.clone();
    let before = store.get(&id).await.unwrap().unwrap();
    report(&concur, &store, &id, ConnectionStatus::AccountNotFound).await;

    let popped = poll(&concur, &store, &settings(), far()).await.unwrap();
    assert_eq!(
        (popped.seen, popped.requeued),
        (4, 0),
        "popped until requeued: {popped:?}"
    );

    admin(
        &sandbox,
        "/_sandbox/clock/advance",
        json!({"seconds": 23 * 3600}),
    )
    .await;
    let early = poll(&concur, &store, &settings(), far()).await.unwrap();
    assert_eq!(early.requeued, 0, "not before 24 h: {early:?}");

    admin(
        &sandbox,
        "/_sandbox/clock/advance",
        json!({"seconds": 3600 + 1}),
    )
    .await;
    let requeue = poll(&concur, &store, &settings(), far()).await.unwrap();
    assert_eq!(
        (requeue.seen, requeue.requeued, requeue.new),
        (5, 1, 0),
        "{requeue:?}"
    );
    let after = store.get(&id).await.unwrap().unwrap();
    assert_eq!((after.state, after.attempt), (RequestState::Received, 2));
    assert_ne!(
        after.request_token, before.request_token,
        "a requeue carries a new token"
    );
    assert_eq!(testing::scan_requests(&store).await.len(), 5);
}

#[tokio::test]
async fn stops_before_the_deadline_and_the_next_run_resumes() {
    let sandbox = sandbox(35, |c| c.faults = vec!["list:latency=150".into()]).await;
    let (concur, store) = (client(&sandbox), store().await);
    concur.app_token(far()).await.unwrap();
    let margin = Duration::from_millis(200);
    let settings = PollerSettings {
        deadline_margin: margin,
        ..settings()
    };
    let started = Instant::now();
    let deadline = started + margin + Duration::from_millis(400);
    let first = poll(&concur, &store, &settings, deadline).await.unwrap();
    assert_eq!(first.stop_reason, StopReason::Deadline, "{first:?}");
    assert!(first.pages >= 1 && first.pages < 4, "{first:?}");
    assert!(
        Instant::now() < deadline + Duration::from_millis(100),
        "finished near the deadline"
    );
    assert_eq!(testing::scan_requests(&store).await.len() as u32, first.new);

    let second = poll(&concur, &store, &settings, far()).await.unwrap();
    assert_eq!(second.stop_reason, StopReason::Drained);
    assert_eq!(first.new + second.new, 35, "{first:?} {second:?}");
    assert_each_stored_once(&testing::scan_requests(&store).await, 35);
}

#[tokio::test]
async fn the_page_cap_stops_a_run() {
    let sandbox = sandbox(35, |_| {}).await;
    let (concur, store) = (client(&sandbox), store().await);
    let capped = PollerSettings {
        max_pages: 2,
        ..settings()
    };
    let summary = poll(&concur, &store, &capped, far()).await.unwrap();
    assert_eq!(
        (summary.pages, summary.new, summary.stop_reason),
        (2, 20, StopReason::PageCap)
    );
}

/// Sets sandbox fault rules once `after_pages` pages were read.
struct FaultAfter {
    inner: ConcurClient,
    admin: String,
    after_pages: u32,
    rules: Vec<&'static str>,
    pages: AtomicU32,
}

impl PendingSource for FaultAfter {
    async fn list_page(
        &self,
        limit: u32,
        offset: Option<&str>,
        deadline: Instant,
    ) -> Result<Page, ConcurError> {
        if self.pages.load(Ordering::SeqCst) == self.after_pages {
            triplink_shared::testing::http_client()
                .post(&self.admin)
                .json(&json!({ "rules": self.rules }))
                .send()
                .await
                .unwrap();
        }
        let page = self.inner.list_page(limit, offset, deadline).await?;
        self.pages.fetch_add(1, Ordering::SeqCst);
        Ok(page)
    }
}

fn fault_after(sandbox: &Sandbox, after_pages: u32, rules: Vec<&'static str>) -> FaultAfter {
    FaultAfter {
        inner: client(sandbox),
        admin: sandbox.url("/_sandbox/faults"),
        after_pages,
        rules,
        pages: AtomicU32::new(0),
    }
}

#[tokio::test]
async fn a_500_and_a_429_in_the_middle_of_paging_are_retried() {
    let sandbox = sandbox(35, |_| {}).await;
    let store = store().await;
    let source = fault_after(
        &sandbox,
        1,
        vec!["list:500:next=1", "list:429:retry-after=1:next=1"],
    );
    let summary = poll(&source, &store, &settings(), far()).await.unwrap();
    assert_eq!(
        (summary.new, summary.stop_reason, summary.error.as_deref()),
        (35, StopReason::Drained, None),
        "{summary:?}"
    );
    assert_each_stored_once(&testing::scan_requests(&store).await, 35);
}

#[tokio::test]
async fn concur_failing_mid_run_keeps_the_progress_and_the_next_run_finishes() {
    let sandbox = sandbox(35, |_| {}).await;
    let store = store().await;
    let source = fault_after(&sandbox, 2, vec!["list:500"]);
    let broken = poll(&source, &store, &settings(), far()).await.unwrap();
    assert_eq!(
        (broken.pages, broken.new, broken.stop_reason),
        (2, 20, StopReason::ConcurError),
        "{broken:?}"
    );
    assert!(
        broken.error.as_deref().unwrap().starts_with("unavailable"),
        "{broken:?}"
    );
    assert_eq!(
        testing::scan_requests(&store).await.len(),
        20,
        "progress kept"
    );

    // Nothing at all can be done: an error, not a summary.
    let err = poll(&source, &store, &settings(), far()).await.unwrap_err();
    assert!(err.to_string().contains("no page could be read"), "{err}");

    triplink_shared::testing::http_client()
        .delete(sandbox.url("/_sandbox/faults"))
        .send()
        .await
        .unwrap();
    let resumed = poll(&client(&sandbox), &store, &settings(), far())
        .await
        .unwrap();
    assert_eq!(
        (resumed.new, resumed.stop_reason),
        (15, StopReason::Drained),
        "{resumed:?}"
    );
    assert_each_stored_once(&testing::scan_requests(&store).await, 35);
}

/// How many calls each fault rule in force fired on.
async fn fault_hits(sandbox: &Sandbox) -> Vec<u64> {
    let faults: serde_json::Value = triplink_shared::testing::http_client()
        .get(sandbox.url("/_sandbox/faults"))
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

#[tokio::test]
async fn a_503_mid_run_stops_paging_after_one_call() {
    let sandbox = sandbox(35, |_| {}).await;
    let store = store().await;
    let source = fault_after(&sandbox, 2, vec!["list:503"]);
    let summary = poll(&source, &store, &settings(), far()).await.unwrap();
    assert_eq!(
        (summary.pages, summary.new, summary.stop_reason),
        (2, 20, StopReason::ConcurPaused),
        "{summary:?}"
    );
    assert_eq!(
        serde_json::to_value(summary.stop_reason).unwrap(),
        "concur_paused"
    );
    assert_eq!(fault_hits(&sandbox).await, [1], "the 503 was not retried");
}

#[tokio::test]
async fn a_list_without_an_answer_in_time_stops_paging_after_one_call() {
    let sandbox = sandbox(35, |_| {}).await;
    let store = store().await;
    let mut config = client(&sandbox).config().clone();
    config.call_timeout = Duration::from_millis(300);
    let source = FaultAfter {
        inner: ConcurClient::new(config).unwrap(),
        admin: sandbox.url("/_sandbox/faults"),
        after_pages: 1,
        rules: vec!["list:latency=1500"],
        pages: AtomicU32::new(0),
    };
    let summary = poll(&source, &store, &settings(), far()).await.unwrap();
    assert_eq!(
        (summary.pages, summary.new, summary.stop_reason),
        (1, 10, StopReason::ConcurPaused),
        "{summary:?}"
    );
    assert!(
        summary.error.as_deref().unwrap().starts_with("timeout"),
        "{summary:?}"
    );
    assert_eq!(
        fault_hits(&sandbox).await,
        [1],
        "the timeout was not retried"
    );
}

#[tokio::test]
async fn after_a_503_the_next_runs_leave_concur_alone_for_five_minutes() {
    use triplink_shared::telemetry::Metrics;
    let sandbox = sandbox(12, |_| {}).await;
    admin(&sandbox, "/_sandbox/faults", json!({"rules": ["list:503"]})).await;
    let poller = poller::Poller {
        concur: client(&sandbox),
        store: store().await,
        settings: settings(),
        metrics: Metrics::disabled("poller"),
        pause: Default::default(),
        keep_alive: None,
    };
    let err = poller.run(far()).await.unwrap_err();
    assert!(err.to_string().contains("no page could be read"), "{err}");
    assert_eq!(fault_hits(&sandbox).await, [1]);
    let left = poller.pause.left().unwrap();
    assert!(left > Duration::from_secs(295), "{left:?}");

    // The schedule fires again a minute later: Concur is not called.
    let skipped = poller.run(far()).await.unwrap();
    assert_eq!(
        (skipped.pages, skipped.stop_reason),
        (0, StopReason::ConcurPaused)
    );
    assert_eq!(fault_hits(&sandbox).await, [1], "no call during the pause");
    assert!(testing::scan_requests(&poller.store).await.is_empty());
}

#[tokio::test]
async fn a_foreign_host_next_page_is_not_followed() {
    let sandbox = sandbox(35, |c| {
        c.public_base_url = Some("https://us.api.concursolutions.com".into())
    })
    .await;
    let (concur, store) = (client(&sandbox), store().await);
    let summary = poll(&concur, &store, &settings(), far()).await.unwrap();
    assert_eq!(
        (summary.new, summary.stop_reason),
        (35, StopReason::Drained),
        "{summary:?}"
    );
    assert!(testing::scan_requests(&store).await.iter().all(|i| i
        .uri
        .as_deref()
        .unwrap_or("")
        .starts_with("https://us.api.concursolutions.com/")));
}

/// Every page of that run names the foreign host; the run logs it once, with the count
/// of pages, and each page's Concur call at info with its correlation id.
#[tokio::test]
async fn a_foreign_next_page_host_is_logged_once_per_run() {
    let sandbox = sandbox(35, |c| {
        c.public_base_url = Some("https://us.api.concursolutions.com".into())
    })
    .await;
    let (concur, store) = (client(&sandbox), store().await);
    let logs = testing::capture_logs("info,concur_sandbox=off");
    let summary = poll(&concur, &store, &settings(), far()).await.unwrap();
    assert_eq!((summary.pages, summary.new), (4, 35), "{summary:?}");

    let foreign = logs.with_message("NextPage names another host; only its offset is used");
    assert_eq!(foreign.len(), 1, "{foreign:#?}");
    assert_eq!(foreign[0]["level"], "WARN");
    assert_eq!(foreign[0]["next_page_host"], "us.api.concursolutions.com");
    assert_eq!(foreign[0]["api_host"], "127.0.0.1");
    // The three pages with a NextPage (the last one has none).
    assert_eq!(foreign[0]["pages"], 3);

    let calls: Vec<_> = logs
        .with_message("concur call")
        .into_iter()
        .filter(|line| line["op"] == "list")
        .collect();
    assert_eq!(calls.len(), 4, "{calls:#?}");
    for call in &calls {
        assert_eq!(call["level"], "INFO");
        assert!(
            call["correlation_id"]
                .as_str()
                .is_some_and(|c| !c.is_empty()),
            "{call}"
        );
    }

    // A second run logs it again (once per run, not once per process).
    drop(logs);
    let logs = testing::capture_logs("info,concur_sandbox=off");
    poll(&concur, &store, &settings(), far()).await.unwrap();
    assert_eq!(
        logs.with_message("NextPage names another host; only its offset is used")
            .len(),
        1
    );
}

#[tokio::test]
async fn two_pollers_at_once_store_every_request_once() {
    let sandbox = sandbox(35, |_| {}).await;
    let store = store().await;
    let (a, b) = (client(&sandbox), client(&sandbox));
    let settings = settings();
    let (first, second) = tokio::join!(
        poll(&a, &store, &settings, far()),
        poll(&b, &store, &settings, far())
    );
    let (first, second): (PollSummary, PollSummary) = (first.unwrap(), second.unwrap());
    assert_eq!(first.new + second.new, 35, "{first:?} {second:?}");
    assert_eq!(first.failed + second.failed, 0);
    assert_each_stored_once(&testing::scan_requests(&store).await, 35);
}

#[tokio::test]
async fn a_run_killed_after_some_writes_loses_nothing() {
    let sandbox = sandbox(200, |c| c.faults = vec!["list:latency=30".into()]).await;
    let concur = Arc::new(client(&sandbox));
    let store = Arc::new(store().await);
    let run = {
        let (concur, store) = (concur.clone(), store.clone());
        tokio::spawn(async move { poll(&concur, store.as_ref(), &settings(), far()).await })
    };
    let watch_started = Instant::now();
    loop {
        let stored = testing::scan_requests(&store).await.len();
        if stored >= 25 {
            break;
        }
        assert!(
            watch_started.elapsed() < Duration::from_secs(30),
            "no progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled(), "killed mid-run");
    // Writes already on the wire when the run was killed still land (as they would
    // after a Lambda timeout): let them, then count what the killed run left.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = testing::scan_requests(&store).await.len();
    assert!(killed_at < 200, "killed before the end ({killed_at})");

    let second = poll(concur.as_ref(), store.as_ref(), &settings(), far())
        .await
        .unwrap();
    assert_eq!(second.stop_reason, StopReason::Drained);
    assert_eq!(second.new as usize, 200 - killed_at, "{second:?}");
    assert_each_stored_once(&testing::scan_requests(&store).await, 200);
    let by_id: HashMap<_, _> = testing::scan_requests(&store)
        .await
        .into_iter()
        .map(|i| (i.request_id.clone(), i))
        .collect();
    assert_eq!(by_id.len(), 200);
}

#[tokio::test]
async fn the_handler_runs_on_a_scheduled_event_and_returns_the_summary() {
    use aws_lambda_events::eventbridge::EventBridgeEvent;
    use triplink_shared::telemetry::Metrics;
    let sandbox = sandbox(12, |_| {}).await;
    let poller = poller::Poller {
        concur: client(&sandbox),
        store: store().await,
        settings: settings(),
        metrics: Metrics::new("TripLink", "poller"),
        pause: Default::default(),
        keep_alive: None,
    };
    let event: EventBridgeEvent<serde_json::Value> = serde_json::from_value(json!({
        "version": "0", "id": "89d1a02d-5ec7-412e-82f5-13505f849b41",
        "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "123456789012", "time": "2026-11-23T12:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/triplink-poller"],
        "detail": {}
    }))
    .unwrap();
    let mut context = lambda_runtime::Context::default();
    context.request_id = "req-1".into();
    context.deadline = (chrono::Utc::now().timestamp_millis() + 30_000) as u64;
    let summary = poller
        .handle(lambda_runtime::LambdaEvent::new(event, context))
        .await
        .unwrap();
    assert_eq!(
        (summary.new, summary.stop_reason),
        (12, StopReason::Drained)
    );
    let returned = serde_json::to_value(&summary).unwrap();
    assert_eq!(returned["new"], 12);
    assert_eq!(returned["stop_reason"], "drained");
}

/// A Concur whose list calls are answered, then held until released: the page a run
/// got stays in flight while other actors move on.
struct Held<'a> {
    inner: &'a ConcurClient,
    fetched: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
}

impl PendingSource for Held<'_> {
    async fn list_page(
        &self,
        limit: u32,
        offset: Option<&str>,
        deadline: Instant,
    ) -> Result<Page, ConcurError> {
        let page = self.inner.list_page(limit, offset, deadline).await;
        self.fetched.notify_one();
        self.release.notified().await;
        page
    }
}

/// Report an attempt exactly as the worker does, step by step through the life cycle's
/// writes (claim, decision with its PUT counted, PUT, reported).
async fn report_as_the_worker(concur: &ConcurClient, store: &DynamoRequestStore, id: &str) {
    use triplink_shared::store::{Claim, Decision, Lease, ReportResult, WorkStore};
    let now = chrono::Utc::now();
    let until = now.timestamp_millis() + 60_000;
    let Claim::Claimed(item) = store.claim(id, 1, "worker-1", until, now).await.unwrap() else {
        panic!("not claimed");
    };
    let lease = Lease {
        id,
        attempt: item.attempt,
        owner: "worker-1",
    };
    let decision = Decision {
        status: ConnectionStatus::Connected,
        reason: "matched".into(),
    };
    assert_eq!(
        store
            .record_decision_and_put_sent(lease, &decision, now)
            .await
            .unwrap(),
        Some(0)
    );
    concur
        .update_status(id, ConnectionStatus::Connected, far())
        .await
        .unwrap();
    let decided = triplink_shared::store::RequestItem {
        decided_status: Some(decision.status),
        decided_at: Some(triplink_shared::store::layout::timestamp(now)),
        decision_reason: Some(decision.reason.clone()),
        ..item.clone()
    };
    assert!(store
        .record_reported(
            lease,
            &decided,
            ReportResult::Accepted,
            chrono::Utc::now(),
            30
        )
        .await
        .unwrap());
}

/// Issue 10, defect 1: a page requested before the worker's PUT popped a request, whose
/// write lands after the worker recorded the report, must not start a new attempt.
#[tokio::test]
async fn a_page_read_before_our_report_does_not_requeue_the_request() {
    let sandbox = sandbox(1, |_| {}).await;
    let (concur, store) = (client(&sandbox), store().await);
    poll(&concur, &store, &settings(), far()).await.unwrap();
    let id = testing::scan_requests(&store).await[0].request_id.clone();

    let held = Held {
        inner: &concur,
        fetched: Arc::new(tokio::sync::Notify::new()),
        release: Arc::new(tokio::sync::Notify::new()),
    };
    let one_page = PollerSettings {
        max_pages: 1,
        ..settings()
    };
    let racing_poll = poll(&held, &store, &one_page, far());
    let worker = async {
        held.fetched.notified().await;
        report_as_the_worker(&concur, &store, &id).await;
        held.release.notify_one();
    };
    let (summary, ()) = tokio::join!(racing_poll, worker);
    let summary = summary.unwrap();
    assert_eq!(summary.seen, 1, "the page still showed the request");
    assert_eq!(summary.requeued, 0, "{summary:?}");
    let item = store.get(&id).await.unwrap().unwrap();
    assert_eq!((item.state, item.attempt), (RequestState::Reported, 1));

    // A later page does not show it (popped) and nothing changes; Concur's CRSUC is final.
    let later = poll(&concur, &store, &settings(), far()).await.unwrap();
    assert_eq!((later.seen, later.requeued), (0, 0), "{later:?}");
    let view: serde_json::Value = triplink_shared::testing::http_client()
        .get(sandbox.url(&format!("/_sandbox/requests/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["history"].as_array().unwrap().len(), 1, "{view}");
    assert_eq!(view["exchange_attempts"].as_array().unwrap().len(), 0);
}

/// Issue 10, defect 3: items that cannot be read are set aside; the page and the queue
/// behind it are still read.
#[tokio::test]
async fn unreadable_items_are_quarantined_and_the_queue_behind_them_is_read() {
    let sandbox = sandbox(35, |c| c.faults = vec!["list:poison".into()]).await;
    let (concur, store) = (client(&sandbox), store().await);
    let summary = poll(&concur, &store, &settings(), far()).await.unwrap();
    assert_eq!(summary.stop_reason, StopReason::Drained, "{summary:?}");
    assert_eq!(summary.new, 35, "every real request stored: {summary:?}");
    assert_eq!(summary.quarantined, 2 * summary.pages, "{summary:?}");
    assert_eq!(summary.degraded, summary.pages, "{summary:?}");
    let items = testing::scan_requests(&store).await;
    let quarantined: Vec<_> = items
        .iter()
        .filter(|i| i.state == RequestState::Quarantined)
        .collect();
    assert_eq!(quarantined.len(), 2, "the same bad items, recorded once");
    let malformed = quarantined
        .iter()
        .find(|i| i.request_id == "poison-malformed")
        .unwrap();
    assert_eq!(
        malformed.quarantine_reason.as_deref(),
        Some("malformed_item")
    );
    assert!(malformed.last_name.is_none() && malformed.request_token.is_none());
    assert!(malformed.expires_at.is_some(), "quarantined items expire");
    assert!(malformed.due_at.is_none(), "never processed, never swept");
    assert!(quarantined
        .iter()
        .any(|i| i.request_id.starts_with("unidentified:")
            && i.quarantine_reason.as_deref() == Some("missing_id")));
    // The degraded items are real requests, stored as received (status is not needed).
    assert_eq!(
        items
            .iter()
            .filter(|i| i.state == RequestState::Received)
            .count(),
        35
    );
    // Reading it all again records nothing new.
    let again = poll(&concur, &store, &settings(), far()).await.unwrap();
    assert_eq!((again.new, again.requeued), (0, 0), "{again:?}");
    assert_eq!(testing::scan_requests(&store).await.len(), 37);
}

#[tokio::test]
async fn a_run_on_an_empty_table_and_an_empty_queue_does_nothing_and_succeeds() {
    use triplink_shared::telemetry::Metrics;
    let sandbox = sandbox(0, |_| {}).await;
    let poller = poller::Poller {
        concur: client(&sandbox),
        store: store().await,
        settings: settings(),
        metrics: Metrics::disabled("poller"),
        pause: Default::default(),
        keep_alive: None,
    };
    let summary = poller.run(far()).await.unwrap();
    assert_eq!(
        (
            summary.pages,
            summary.seen,
            summary.new,
            summary.stop_reason
        ),
        (1, 0, 0, StopReason::Drained)
    );
    assert!(testing::scan_requests(&poller.store).await.is_empty());
}

#[tokio::test]
async fn the_run_renews_refresh_tokens_due_for_renewal_after_the_poll() {
    use triplink_shared::telemetry::Metrics;
    use triplink_shared::vault::{KeepAlive, KeepAliveSettings, KmsEncryptor, TokenVault};
    // A connection made forty days ago is due for its 30-day renewal. The virtual clock
    // starts now, so the token's expiry is a real date.
    let sandbox = sandbox(2, |c| {
        c.clock_start = None;
    })
    .await;
    let concur = Arc::new(client(&sandbox));
    let dynamo = testing::dynamodb();
    let table = testing::unique_name("connections");
    tables::create_connections_table(&dynamo, &table)
        .await
        .unwrap();
    let key = testing::kms_key().await;
    let vault = TokenVault::new(
        dynamo.clone(),
        table.clone(),
        KmsEncryptor::from_sdk_config(&testing::sdk_config(), key.clone()),
    );
    let page = concur.list_page(10, None, far()).await.unwrap();
    let request = &page.items[0];
    let tokens = testing::exchange(&concur, request).await;
    vault
        .store_connection(
            "member-1",
            &request.id,
            &tokens,
            chrono::Utc::now() - chrono::Duration::days(40),
        )
        .await
        .unwrap();
    let before = vault.get("member-1").await.unwrap().unwrap();
    let poller = poller::Poller {
        concur: concur.clone(),
        store: store().await,
        settings: settings(),
        metrics: Metrics::disabled("poller"),
        pause: Default::default(),
        keep_alive: Some(Box::new(KeepAlive {
            vault,
            concur: concur.clone(),
            settings: KeepAliveSettings::default(),
            owner: "poller-test".into(),
        })),
    };
    poller.run(far()).await.unwrap();
    let check = TokenVault::new(
        dynamo,
        table,
        KmsEncryptor::from_sdk_config(&testing::sdk_config(), key),
    );
    let after = check.get("member-1").await.unwrap().unwrap();
    assert_eq!(
        after.token_version,
        before.token_version + 1,
        "renewed once"
    );
    assert_ne!(after.ciphertext(), before.ciphertext());
    // The renewed token is the live one.
    check
        .access_token(&concur, "member-1", "check", far())
        .await
        .unwrap();
}

/// A store whose writes wait until released (reads pass through).
struct Gated<'a> {
    inner: &'a DynamoRequestStore,
    open: tokio::sync::watch::Receiver<bool>,
}

impl RequestStore for Gated<'_> {
    async fn record_polled(
        &self,
        request: &triplink_shared::model::ConnectionRequest,
        fetched_at: chrono::DateTime<chrono::Utc>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<triplink_shared::store::PollWrite, triplink_shared::store::StoreError> {
        let mut open = self.open.clone();
        let _ = open.wait_for(|open| *open).await;
        self.inner.record_polled(request, fetched_at, now).await
    }
    async fn record_quarantined(
        &self,
        id: &str,
        reason: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<triplink_shared::store::QuarantineWrite, triplink_shared::store::StoreError> {
        self.inner.record_quarantined(id, reason, now).await
    }
    async fn get(
        &self,
        id: &str,
    ) -> Result<Option<RequestItem>, triplink_shared::store::StoreError> {
        self.inner.get(id).await
    }
}

/// Reading runs ahead of writing, but only so far: while the store takes no write, the
/// run reads at most the page being written, the pages waiting for it and the one in
/// hand; once writes resume, every page read is written, once.
#[tokio::test]
async fn reading_runs_ahead_of_stuck_writes_by_a_bounded_number_of_pages() {
    let sandbox = sandbox(200, |_| {}).await;
    // Counts the pages read (no fault ever set).
    let concur = fault_after(&sandbox, u32::MAX, Vec::new());
    let store = store().await;
    let (open, gate) = tokio::sync::watch::channel(false);
    let gated = Gated {
        inner: &store,
        open: gate,
    };
    let settings = settings();
    let run = poll(&concur, &gated, &settings, far());
    tokio::pin!(run);
    // Let the run read as far as it will while no write lands.
    let waited = tokio::time::timeout(Duration::from_millis(1500), &mut run).await;
    assert!(waited.is_err(), "the run cannot end while its writes wait");
    let lists = concur.pages.load(Ordering::SeqCst);
    let bound = (poller::WRITE_AHEAD_PAGES + 2) as u32;
    assert!(
        (1..=bound).contains(&lists),
        "read {lists} pages ahead of the writes (at most {bound})"
    );
    assert!(testing::scan_requests(&store).await.is_empty());
    open.send(true).unwrap();
    let summary = run.await.unwrap();
    assert_eq!(summary.stop_reason, StopReason::Drained);
    assert_eq!(summary.new, 200, "{summary:?}");
    assert_each_stored_once(&testing::scan_requests(&store).await, 200);
}
