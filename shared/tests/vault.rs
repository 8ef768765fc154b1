//! The token vault against moto (DynamoDB + KMS) and the Concur sandbox (refresh
//! rotation, revoke).

use std::time::Duration;

use chrono::Utc;
use concur_sandbox::{spawn, Config, Sandbox};
use secrecy::{ExposeSecret, SecretString};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;
use triplink_shared::concur::{
    BaseUrl, ConcurClient, ConcurConfig, ConcurError, OAuthErrorKind, UserTokens,
};
use triplink_shared::store::tables;
use triplink_shared::testing;
use triplink_shared::vault::{Encryptor, KmsEncryptor, TokenVault, VaultError};

/// KMS encryption that also remembers the last plaintext it encrypted (the newest
/// refresh token), so a test can try that token at Concur.
#[derive(Clone)]
struct Recording {
    inner: KmsEncryptor,
    last: Arc<Mutex<Option<String>>>,
}

impl Encryptor for Recording {
    async fn encrypt(
        &self,
        plaintext: &SecretString,
        member_id: &str,
    ) -> Result<Vec<u8>, VaultError> {
        *self.last.lock().unwrap() = Some(plaintext.expose_secret().to_owned());
        self.inner.encrypt(plaintext, member_id).await
    }
    async fn decrypt(
        &self,
        ciphertext: &[u8],
        member_id: &str,
    ) -> Result<SecretString, VaultError> {
        self.inner.decrypt(ciphertext, member_id).await
    }
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

async fn setup() -> (Sandbox, ConcurClient, TokenVault<Recording>) {
    let mut config = Config::for_tests();
    config.users = 2;
    let sandbox = spawn(config).await.unwrap();
    let concur = ConcurClient::new(ConcurConfig::new(
        BaseUrl::parse(&sandbox.local_url).unwrap(),
        "sandbox-client",
        SecretString::from("sandbox-secret"),
    ))
    .unwrap();
    let aws = testing::sdk_config();
    let dynamo = aws_sdk_dynamodb::Client::new(&aws);
    let table = testing::unique_name("connections");
    tables::create_connections_table(&dynamo, &table)
        .await
        .unwrap();
    let encryptor = Recording {
        inner: KmsEncryptor::new(aws_sdk_kms::Client::new(&aws), testing::kms_key().await),
        last: Arc::default(),
    };
    (sandbox, concur, TokenVault::new(dynamo, table, encryptor))
}

/// Exchange the first pending request's token, as the worker does on a match.
async fn connect(concur: &ConcurClient) -> (String, UserTokens) {
    let page = concur.list_page(10, None, far()).await.unwrap();
    let request = &page.items[0];
    let tokens = concur
        .exchange_request_token(
            request.user_id.as_deref().unwrap(),
            request.request_token.as_ref().unwrap(),
            far(),
        )
        .await
        .unwrap();
    (request.id.clone(), tokens)
}

fn vault_last(vault: &TokenVault<Recording>) -> String {
    vault.encryptor().last.lock().unwrap().clone().unwrap()
}

async fn refresh_fails_with_108(
    concur: &ConcurClient,
    geolocation: &BaseUrl,
    token: &SecretString,
) {
    match concur.refresh_user_token(geolocation, token, far()).await {
        Err(ConcurError::OAuth { error, .. }) => {
            assert_eq!(error.kind(), OAuthErrorKind::RefreshTokenInvalid)
        }
        other => panic!("expected 108, got {other:?}"),
    }
}

#[tokio::test]
async fn refresh_tokens_are_encrypted_at_rest_and_rotated_on_refresh() {
    let (_sandbox, concur, vault) = setup().await;
    let (request_id, tokens) = connect(&concur).await;
    vault
        .store_connection("M1", &request_id, &tokens, Utc::now())
        .await
        .unwrap();
    let stored = vault.get("M1").await.unwrap().unwrap();
    let plaintext = tokens.refresh_token.expose_secret().as_bytes();
    assert!(!stored.ciphertext().is_empty());
    assert!(
        !stored
            .ciphertext()
            .windows(plaintext.len())
            .any(|w| w == plaintext),
        "the refresh token is not stored in clear"
    );
    assert_eq!(stored.geolocation, tokens.geolocation.as_str());
    assert_eq!(stored.concur_user_id, tokens.user_id);

    let fresh = vault
        .access_token(&concur, "M1", "test", far())
        .await
        .unwrap();
    assert!(!fresh.access_token.expose_secret().is_empty());
    assert_ne!(
        fresh.refresh_token.expose_secret(),
        tokens.refresh_token.expose_secret(),
        "the sandbox rotates refresh tokens"
    );
    let after = vault.get("M1").await.unwrap().unwrap();
    assert_ne!(
        after.ciphertext(),
        stored.ciphertext(),
        "the rotated token was stored back"
    );
    refresh_fails_with_108(&concur, &tokens.geolocation, &tokens.refresh_token).await;
}

#[tokio::test]
async fn concurrent_refreshes_never_lose_the_rotated_token() {
    let (_sandbox, concur, vault) = setup().await;
    let (request_id, tokens) = connect(&concur).await;
    vault
        .store_connection("M2", &request_id, &tokens, Utc::now())
        .await
        .unwrap();
    let (a, b, c) = tokio::join!(
        vault.access_token(&concur, "M2", "a", far()),
        vault.access_token(&concur, "M2", "b", far()),
        vault.access_token(&concur, "M2", "c", far()),
    );
    for result in [a, b, c] {
        result.unwrap();
    }
    // Had two refreshes raced, the stored token would be a dead one: it still works.
    vault.access_token(&concur, "M2", "d", far()).await.unwrap();
}

#[tokio::test]
async fn revoke_ends_the_connection_at_concur_and_here() {
    let (_sandbox, concur, vault) = setup().await;
    let (request_id, tokens) = connect(&concur).await;
    vault
        .store_connection("M3", &request_id, &tokens, Utc::now())
        .await
        .unwrap();
    vault.revoke(&concur, "M3", "x", far()).await.unwrap();
    assert!(vault.get("M3").await.unwrap().is_none());
    // The newest refresh token (stored during the revoke's own refresh) no longer works.
    let newest = vault_last(&vault);
    refresh_fails_with_108(&concur, &tokens.geolocation, &SecretString::from(newest)).await;
    assert!(matches!(
        vault.access_token(&concur, "M3", "x", far()).await,
        Err(VaultError::NotConnected(_))
    ));
}
