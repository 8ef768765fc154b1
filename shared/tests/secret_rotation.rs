//! App secret rotation: the client secret is read from Secrets Manager (moto) once, and
//! once more when Concur (wiremock) answers `invalid_client`.

use std::collections::HashMap;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::json;
use tokio::time::Instant;
use triplink_shared::concur::{ConcurClient, ConcurError};
use triplink_shared::config::ConcurSettings;
use triplink_shared::testing;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "/oauth2/v0/token";

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

/// Concur accepting only `client_secret=<secret>`; every other secret is `invalid_client`.
async fn concur_accepting(secret: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TOKEN))
        .and(body_string_contains(format!("client_secret={secret}&")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "expires_in": "3600", "access_token": "app-token"
        })))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(TOKEN))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "code": 64, "error": "invalid_client",
            "error_description": "Incorrect credentials. Please Retry"
        })))
        .with_priority(2)
        .mount(&server)
        .await;
    server
}

/// A client built as the functions build theirs, its secret in Secrets Manager.
async fn client_with_secret(server: &MockServer, secret: &str) -> (ConcurClient, String) {
    let aws = testing::local_sdk_config(&testing::moto().endpoint);
    let name = testing::unique_name("concur-secret");
    aws_sdk_secretsmanager::Client::new(&aws)
        .create_secret()
        .name(&name)
        .secret_string(json!({"client_id": "app", "client_secret": secret}).to_string())
        .send()
        .await
        .unwrap();
    let env: HashMap<String, String> = [
        ("CONCUR_API_BASE_URL", server.uri()),
        (
            "CONCUR_CLIENT_SECRET_SOURCE",
            format!("secretsmanager:{name}"),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let client = ConcurSettings::from_env(&env)
        .unwrap()
        .client(&aws, &env)
        .await
        .unwrap();
    (client, name)
}

async fn rotate(name: &str, secret: &str) {
    let aws = testing::local_sdk_config(&testing::moto().endpoint);
    aws_sdk_secretsmanager::Client::new(&aws)
        .put_secret_value()
        .secret_id(name)
        .secret_string(json!({"client_id": "app", "client_secret": secret}).to_string())
        .send()
        .await
        .unwrap();
}

async fn token_calls(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == TOKEN)
        .count()
}

#[tokio::test]
async fn a_rotated_client_secret_is_fetched_again_once_on_invalid_client() {
    let server = concur_accepting("new-secret").await;
    let (client, name) = client_with_secret(&server, "old-secret").await;
    // The supplier rotated the secret after this execution environment read it.
    rotate(&name, "new-secret").await;
    client.app_token(soon()).await.unwrap();
    assert_eq!(
        token_calls(&server).await,
        2,
        "refused once, then the new secret"
    );
    // The new secret is kept: the next grant goes straight through.
    client
        .refresh_user_token(
            &triplink_shared::concur::BaseUrl::parse(&server.uri()).unwrap(),
            &SecretString::from("refresh"),
            soon(),
        )
        .await
        .ok();
    assert_eq!(token_calls(&server).await, 3);
}

#[tokio::test]
async fn an_unchanged_secret_refused_as_invalid_client_fails_after_one_refetch() {
    let server = concur_accepting("the-right-secret").await;
    let (client, _name) = client_with_secret(&server, "a-wrong-secret").await;
    let err = client.app_token(soon()).await.unwrap_err();
    match &err {
        ConcurError::OAuth { error, .. } => {
            assert_eq!(error.error.as_deref(), Some("invalid_client"))
        }
        other => panic!("expected invalid_client, got {other:?}"),
    }
    assert!(!err.to_string().contains("a-wrong-secret"));
    assert_eq!(
        token_calls(&server).await,
        1,
        "the re-fetched secret is the same: no second grant"
    );
}
