//! The request-token exchange against the Concur sandbox (in process, on loopback):
//! OAuth code 16 ("user lives elsewhere") and the app token's geolocation.

use std::time::Duration;

use concur_sandbox::{spawn, Config, Sandbox};
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::time::Instant;
use triplink_shared::concur::{BaseUrl, ConcurClient, ConcurConfig, ConcurError, OAuthErrorKind};

fn far() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

async fn setup() -> (Sandbox, ConcurClient) {
    let mut config = Config::for_tests();
    config.users = 2;
    let sandbox = spawn(config).await.unwrap();
    let concur = ConcurClient::new(ConcurConfig::new(
        BaseUrl::parse(&sandbox.local_url).unwrap(),
        "sandbox-client",
        SecretString::from("sandbox-secret"),
    ))
    .unwrap();
    (sandbox, concur)
}

async fn set_faults(sandbox: &Sandbox, rules: &[&str]) {
    let response = triplink_shared::testing::http_client()
        .post(sandbox.url("/_sandbox/faults"))
        .json(&json!({ "rules": rules, "replace": true }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

async fn fault_hits(sandbox: &Sandbox) -> Vec<u64> {
    let faults: Value = triplink_shared::testing::http_client()
        .get(sandbox.url("/_sandbox/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    faults["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["hits"].as_u64().unwrap())
        .collect()
}

/// The exchanges the sandbox processed for a request (a code 16 answer is not one).
async fn exchange_attempts(sandbox: &Sandbox, id: &str) -> usize {
    let view: Value = triplink_shared::testing::http_client()
        .get(sandbox.url(&format!("/_sandbox/requests/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    view["exchange_attempts"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_user_living_elsewhere_is_exchanged_at_the_geolocation_once() {
    let (sandbox, concur) = setup().await;
    let page = concur.list_page(10, None, far()).await.unwrap();
    let request = &page.items[0];
    set_faults(&sandbox, &["authtoken:elsewhere:next=1"]).await;
    let tokens = concur
        .exchange_request_token(
            request.user_id.as_deref().unwrap(),
            request.request_token.as_ref().unwrap(),
            far(),
        )
        .await
        .unwrap();
    assert_eq!(tokens.geolocation.as_str(), sandbox.local_url);
    assert_eq!(fault_hits(&sandbox).await, [1], "first grant: code 16");
    assert_eq!(
        exchange_attempts(&sandbox, &request.id).await,
        1,
        "second grant: the exchange"
    );
}

#[tokio::test]
async fn a_second_code_16_is_returned_and_the_token_stays_unspent() {
    let (sandbox, concur) = setup().await;
    let page = concur.list_page(10, None, far()).await.unwrap();
    let request = &page.items[1];
    let (user, token) = (
        request.user_id.as_deref().unwrap(),
        request.request_token.as_ref().unwrap(),
    );
    set_faults(&sandbox, &["authtoken:elsewhere:next=3"]).await;
    let err = concur
        .exchange_request_token(user, token, far())
        .await
        .unwrap_err();
    match &err {
        ConcurError::OAuth { error, .. } => {
            assert_eq!(error.kind(), OAuthErrorKind::UserLivesElsewhere)
        }
        other => panic!("expected code 16, got {other:?}"),
    }
    assert_eq!(fault_hits(&sandbox).await, [2], "exactly two grants");
    assert_eq!(exchange_attempts(&sandbox, &request.id).await, 0);
    set_faults(&sandbox, &[]).await;
    concur
        .exchange_request_token(user, token, far())
        .await
        .expect("a code 16 never spends the token");
}

#[tokio::test]
async fn the_sandbox_app_token_names_its_own_loopback_base() {
    let (sandbox, concur) = setup().await;
    assert_eq!(
        concur.app_base(far()).await.unwrap().as_str(),
        sandbox.local_url
    );
}
