//! The supplier's unlink hook (`worker::unlink`): an EventBridge "Member Unlinked" event
//! run through the worker's Lambda handler, against the Concur sandbox and moto (the
//! vault on DynamoDB, KMS). Twice, concurrently, with Concur failing or its answer lost:
//! the connection ends revoked at Concur and gone from the vault, and a failure is an
//! error (so the event is retried) with the connection kept.

mod common;

use common::{far, Env};
use serde_json::{json, Value};
use triplink_shared::concur::{ConcurError, UserTokens};
use triplink_shared::members::dynamo::DynamoMemberDirectory;
use triplink_shared::store::DynamoRequestStore;
use triplink_shared::vault::{KmsEncryptor, TokenVault};
use worker::unlink::VaultRevoker;
use worker::Worker;

type TestWorker<'a> = Worker<
    &'a triplink_shared::concur::ConcurClient,
    &'a DynamoMemberDirectory,
    &'a DynamoRequestStore,
    &'a TokenVault<KmsEncryptor>,
>;

fn worker(env: &Env) -> TestWorker<'_> {
    common::worker(env, &env.concur, &env.members)
}

fn unlink_event(member_id: &str) -> Value {
    json!({
        "version": "0",
        "id": "0d6b3f2a-4c1e-4e8b-a7d5-93f2c1b8e640",
        "detail-type": "Member Unlinked",
        "source": "triplink.supplier",
        "account": "123456789012",
        "time": "2026-01-15T09:30:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {"member_id": member_id}
    })
}

fn context(request_id: &str) -> lambda_runtime::Context {
    let mut context = lambda_runtime::Context::default();
    context.request_id = request_id.into();
    context.deadline = common::lambda_deadline_ms() as u64;
    context
}

async fn deliver(env: &Env, event: Value, request_id: &str) -> Result<Value, String> {
    let worker = worker(env);
    let revoker = VaultRevoker {
        vault: &env.vault,
        concur: &env.concur,
    };
    worker
        .handle_event(
            lambda_runtime::LambdaEvent::new(
                serde_json::value::to_raw_value(&event).unwrap(),
                context(request_id),
            ),
            &revoker,
        )
        .await
        .map_err(|e| e.to_string())
}

/// Connect `members` (one pending request each, its token exchanged as the worker does).
async fn connect(env: &Env, members: &[&str]) -> Vec<UserTokens> {
    let page = env.concur.list_page(10, None, far()).await.unwrap();
    let mut connected = Vec::new();
    for (member, request) in members
        .iter()
        .zip(page.items.iter().filter(|r| r.user_id.is_some()))
    {
        let tokens = triplink_shared::testing::exchange(&env.concur, request).await;
        env.vault
            .store_connection(member, &request.id, &tokens, chrono::Utc::now())
            .await
            .unwrap();
        connected.push(tokens);
    }
    assert_eq!(connected.len(), members.len());
    connected
}

/// Does Concur still honour this refresh token (the connection is alive there)?
async fn alive_at_concur(env: &Env, tokens: &UserTokens) -> bool {
    match env
        .concur
        .refresh_user_token(&tokens.geolocation, &tokens.refresh_token, far())
        .await
    {
        Ok(_) => true,
        Err(ConcurError::OAuth { .. }) => false,
        Err(e) => panic!("{e}"),
    }
}

async fn faults(env: &Env, rules: &[&str]) {
    let answer = triplink_shared::testing::http_client()
        .post(env.sandbox.url("/_sandbox/faults"))
        .json(&json!({ "rules": rules }))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{answer:?}");
}

#[tokio::test]
async fn an_unlink_revokes_at_concur_deletes_the_connection_and_a_second_delivery_is_a_no_op() {
    let env = common::setup(4).await;
    let tokens = connect(&env, &["M-A", "M-B"]).await;

    let first = deliver(&env, unlink_event("M-A"), "inv-1").await.unwrap();
    assert_eq!(
        first,
        json!({"member_id": "M-A", "result": "revoked_at_concur"})
    );
    assert!(env.vault.get("M-A").await.unwrap().is_none());
    // Revoked at Concur: the refresh token stored before the unlink no longer works.
    assert!(!alive_at_concur(&env, &tokens[0]).await);
    // The other member is untouched.
    assert!(env.vault.get("M-B").await.unwrap().is_some());
    assert!(alive_at_concur(&env, &tokens[1]).await);

    // EventBridge delivers at least once: the same event again changes nothing.
    let again = deliver(&env, unlink_event("M-A"), "inv-2").await.unwrap();
    assert_eq!(
        again,
        json!({"member_id": "M-A", "result": "not_connected"})
    );
}

#[tokio::test]
async fn a_failing_concur_keeps_the_connection_and_the_retry_revokes_it() {
    let env = common::setup(4).await;
    let tokens = connect(&env, &["M-A"]).await;
    // Every attempt of the client's retries fails.
    faults(&env, &["revoke:500:next=2"]).await;
    let failed = deliver(&env, unlink_event("M-A"), "inv-1")
        .await
        .unwrap_err();
    assert!(failed.contains("not revoked yet"), "{failed}");
    assert!(
        env.vault.get("M-A").await.unwrap().is_some(),
        "kept for the retry"
    );
    // The event's retry (the rule is spent): revoked and deleted.
    let retried = deliver(&env, unlink_event("M-A"), "inv-2").await.unwrap();
    assert_eq!(retried["result"], "revoked_at_concur");
    assert!(env.vault.get("M-A").await.unwrap().is_none());
    assert!(!alive_at_concur(&env, &tokens[0]).await);
}

#[tokio::test]
async fn a_revoke_whose_answer_was_lost_is_only_deleted_on_the_retry() {
    let env = common::setup(4).await;
    let tokens = connect(&env, &["M-A"]).await;
    // Concur revokes, then the answer is lost (and so is the client's retry of it).
    faults(&env, &["revoke:drop-after:next=2"]).await;
    let failed = deliver(&env, unlink_event("M-A"), "inv-1")
        .await
        .unwrap_err();
    assert!(failed.contains("not revoked yet"), "{failed}");
    assert!(env.vault.get("M-A").await.unwrap().is_some());
    assert!(
        !alive_at_concur(&env, &tokens[0]).await,
        "Concur did revoke"
    );
    // The retry's refresh is refused (revoked): nothing left to revoke, deleted here.
    let retried = deliver(&env, unlink_event("M-A"), "inv-2").await.unwrap();
    assert_eq!(retried["result"], "deleted_here_only");
    assert!(env.vault.get("M-A").await.unwrap().is_none());
}

#[tokio::test]
async fn two_unlinks_of_one_member_at_once_revoke_it_once() {
    let env = common::setup(4).await;
    let tokens = connect(&env, &["M-A"]).await;
    let (a, b) = tokio::join!(
        deliver(&env, unlink_event("M-A"), "inv-a"),
        deliver(&env, unlink_event("M-A"), "inv-b")
    );
    let mut results = Vec::new();
    for outcome in [a, b] {
        match outcome {
            Ok(value) => results.push(value["result"].as_str().unwrap().to_owned()),
            // The other one held the refresh lease: an error, retried later.
            Err(e) => {
                assert!(e.contains("another refresh"), "{e}");
                results.push("retry".into());
            }
        }
    }
    results.sort();
    assert!(
        results == ["not_connected", "revoked_at_concur"]
            || results == ["retry", "revoked_at_concur"],
        "{results:?}"
    );
    assert!(env.vault.get("M-A").await.unwrap().is_none());
    assert!(!alive_at_concur(&env, &tokens[0]).await);
    let retried = deliver(&env, unlink_event("M-A"), "inv-c").await.unwrap();
    assert_eq!(retried["result"], "not_connected");
}

#[tokio::test]
async fn events_the_worker_does_not_take_are_refused_clearly_without_their_values() {
    let env = common::setup(2).await;
    connect(&env, &["M-A"]).await;
    let scheduled = json!({
        "version": "0", "id": "1", "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "1", "time": "2026-01-15T09:00:00Z", "region": "us-east-1",
        "resources": [], "detail": {}
    });
    let err = deliver(&env, scheduled, "inv-1").await.unwrap_err();
    assert!(err.contains("unrecognised event"), "{err}");

    let mut leaking = unlink_event("M-A");
    leaking["detail"]["email"] = json!("maria.unlink@example.com");
    let err = deliver(&env, leaking, "inv-2").await.unwrap_err();
    assert!(err.contains("unknown field"), "{err}");
    assert!(!err.contains("maria.unlink@example.com"), "{err}");

    let mut broken = unlink_event("M-A");
    broken["time"] = json!("not a time");
    let err = deliver(&env, broken, "inv-3").await.unwrap_err();
    assert!(err.contains("unreadable EventBridge event"), "{err}");
    assert!(!err.contains("not a time"), "{err}");

    // None of it touched the connection.
    assert!(env.vault.get("M-A").await.unwrap().is_some());
}
