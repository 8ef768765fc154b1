//! The token vault against moto (DynamoDB + KMS) and the Concur sandbox (refresh
//! rotation, revoke).

use std::time::Duration;

use chrono::Utc;
use concur_sandbox::{spawn, Config, Sandbox};
use secrecy::{ExposeSecret, SecretString};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;
use triplink_shared::concur::{
    BaseUrl, ConcurClient, ConcurConfig, ConcurError, OAuthErrorKind, UserTokens,
};
use triplink_shared::model::ConnectionRequest;
use triplink_shared::store::tables;
use triplink_shared::testing;
use triplink_shared::vault::{
    Encryptor, KeepAliveSettings, KmsEncryptor, TokenState, TokenVault, VaultError,
};

/// KMS encryption that also remembers the last plaintext it encrypted (the newest
/// refresh token), so a test can try that token at Concur.
/// It can also be told to fail its next encryptions (KMS unavailable).
#[derive(Clone)]
struct Recording {
    inner: KmsEncryptor,
    last: Arc<Mutex<Option<String>>>,
    fail_next: Arc<AtomicU32>,
}

impl Encryptor for Recording {
    async fn encrypt(
        &self,
        plaintext: &SecretString,
        member_id: &str,
    ) -> Result<Vec<u8>, VaultError> {
        if self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(VaultError::Crypto("KMS unavailable (test)".into()));
        }
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
    let aws = testing::sdk_config();
    setup_on(aws_sdk_dynamodb::Client::new(&aws)).await
}

async fn setup_on(
    dynamo: aws_sdk_dynamodb::Client,
) -> (Sandbox, ConcurClient, TokenVault<Recording>) {
    let mut config = Config::for_tests();
    config.users = 2;
    // The virtual clock starts now (frozen): refresh expiries are real dates.
    config.clock_start = None;
    let sandbox = spawn(config).await.unwrap();
    let concur = ConcurClient::new(ConcurConfig::new(
        BaseUrl::parse(&sandbox.local_url).unwrap(),
        "sandbox-client",
        SecretString::from("sandbox-secret"),
    ))
    .unwrap();
    let aws = testing::sdk_config();
    let table = testing::unique_name("connections");
    tables::create_connections_table(&dynamo, &table)
        .await
        .unwrap();
    let encryptor = Recording {
        inner: KmsEncryptor::new(aws_sdk_kms::Client::new(&aws), testing::kms_key().await),
        last: Arc::default(),
        fail_next: Arc::default(),
    };
    (sandbox, concur, TokenVault::new(dynamo, table, encryptor))
}

/// Exchange the first pending request's token, as the worker does on a match.
async fn connect(concur: &ConcurClient) -> (String, UserTokens) {
    let page = concur.list_page(10, None, far()).await.unwrap();
    let request = &page.items[0];
    let tokens = exchange(concur, request).await;
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

/// The user's tokens for a request the sandbox served (its single-use token exchanged).
async fn exchange(concur: &ConcurClient, request: &ConnectionRequest) -> UserTokens {
    testing::exchange(concur, request).await
}

/// One keep-alive run now, with the default settings.
async fn keep_alive_now(
    vault: &TokenVault<Recording>,
    concur: &ConcurClient,
) -> triplink_shared::vault::KeepAliveSummary {
    vault
        .keep_alive(
            concur,
            "k",
            Utc::now(),
            &KeepAliveSettings::default(),
            far(),
        )
        .await
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

#[tokio::test]
async fn a_rotated_token_whose_encryption_fails_is_retried_not_lost() {
    let (_sandbox, concur, vault) = setup().await;
    let (request_id, tokens) = connect(&concur).await;
    vault
        .store_connection("M4", &request_id, &tokens, Utc::now())
        .await
        .unwrap();
    let before = vault.get("M4").await.unwrap().unwrap();
    // KMS fails twice after Concur rotated the token: the old one is already dead.
    vault.encryptor().fail_next.store(2, Ordering::SeqCst);
    vault.access_token(&concur, "M4", "a", far()).await.unwrap();
    let after = vault.get("M4").await.unwrap().unwrap();
    assert_eq!(after.token_version, before.token_version + 1);
    assert!(after.refresh_expires_at.is_some());
    // The stored token is the live one.
    vault.access_token(&concur, "M4", "b", far()).await.unwrap();
}

#[tokio::test]
async fn a_rotated_token_whose_write_fails_is_retried_then_alarmed() {
    use triplink_shared::fault_proxy::{FaultProxy, Op, Rule};
    let proxy = FaultProxy::start(&testing::moto().endpoint);
    let config = testing::local_sdk_config(proxy.endpoint());
    let dynamo = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&config)
            .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
            .build(),
    );
    let (_sandbox, concur, vault) = setup_on(dynamo).await;
    let (request_id, tokens) = connect(&concur).await;
    vault
        .store_connection("M5", &request_id, &tokens, Utc::now())
        .await
        .unwrap();
    // The rotated token's write (the only write naming the token version as a
    // condition) fails twice: it is retried and lands.
    let rule = proxy.add(
        Rule::new(Op::UpdateItem)
            .body_contains(":next")
            .internal()
            .next(2),
    );
    vault.access_token(&concur, "M5", "a", far()).await.unwrap();
    assert_eq!(proxy.fired(rule), 2);
    vault.access_token(&concur, "M5", "b", far()).await.unwrap();

    // A write that never lands is an error (and the RotatedTokenNotStored alarm).
    let rule = proxy.add(
        Rule::new(Op::UpdateItem)
            .body_contains(":next")
            .internal()
            .always(),
    );
    let result = vault.access_token(&concur, "M5", "c", far()).await;
    assert!(
        matches!(result, Err(VaultError::RotationNotStored(_))),
        "{result:?}"
    );
    assert_eq!(
        proxy.fired(rule),
        u64::from(triplink_shared::vault::ROTATION_WRITE_ATTEMPTS)
    );
}

#[tokio::test]
async fn a_refused_refresh_token_is_marked_expired_and_never_sent_again() {
    let (_sandbox, concur, vault) = setup().await;
    let (request_id, tokens) = connect(&concur).await;
    vault
        .store_connection("M6", &request_id, &tokens, Utc::now())
        .await
        .unwrap();
    // Revoked at Concur behind our back (the user disconnected the app).
    concur
        .revoke_connection(&tokens.geolocation, &tokens.access_token, far())
        .await
        .unwrap();
    let result = vault.access_token(&concur, "M6", "a", far()).await;
    assert!(matches!(result, Err(VaultError::Expired(_))), "{result:?}");
    let stored = vault.get("M6").await.unwrap().unwrap();
    assert_eq!(stored.token_state, TokenState::Expired);
    assert!(!VaultError::Expired("M6".into()).is_transient());
    // Not sent again: a refresh through a client with a wrong secret would fail
    // differently; the vault answers from its own record.
    let unreachable = ConcurClient::new(ConcurConfig::new(
        BaseUrl::parse("http://127.0.0.1:9").unwrap(),
        "sandbox-client",
        SecretString::from("sandbox-secret"),
    ))
    .unwrap();
    let again = vault.access_token(&unreachable, "M6", "b", far()).await;
    assert!(matches!(again, Err(VaultError::Expired(_))), "{again:?}");
}

#[test]
fn the_refresh_lease_outlasts_the_call_budget() {
    use triplink_shared::vault::{refresh_lease, REFRESH_LEASE_MIN};
    assert!(REFRESH_LEASE_MIN > triplink_shared::concur::DEFAULT_CALL_TIMEOUT);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        assert!(refresh_lease(Instant::now()) >= REFRESH_LEASE_MIN);
        let long = Instant::now() + Duration::from_secs(600);
        assert!(refresh_lease(long) > Duration::from_secs(600));
    });
}

#[tokio::test]
async fn the_stored_connection_carries_no_token_in_debug_output() {
    let (_sandbox, concur, vault) = setup().await;
    let (request_id, tokens) = connect(&concur).await;
    vault
        .store_connection("M7", &request_id, &tokens, Utc::now())
        .await
        .unwrap();
    let fresh = vault.access_token(&concur, "M7", "a", far()).await.unwrap();
    let stored = vault.get("M7").await.unwrap().unwrap();
    for secret in [
        tokens.refresh_token.expose_secret(),
        tokens.access_token.expose_secret(),
        fresh.refresh_token.expose_secret(),
        fresh.access_token.expose_secret(),
    ] {
        for debug in [
            format!("{tokens:?}"),
            format!("{fresh:?}"),
            format!("{stored:?}"),
        ] {
            assert!(!debug.contains(secret), "a token in Debug output");
        }
    }
}

async fn advance(sandbox: &Sandbox, days: i64) {
    triplink_shared::testing::http_client()
        .post(sandbox.url("/_sandbox/clock/advance"))
        .json(&serde_json::json!({"seconds": days * 86_400}))
        .send()
        .await
        .unwrap();
}

/// Connect both seeded users as members K1 and K2.
async fn connect_two(concur: &ConcurClient, vault: &TokenVault<Recording>) {
    let page = concur.list_page(10, None, far()).await.unwrap();
    for (member, request) in ["K1", "K2"].iter().zip(&page.items) {
        let tokens = exchange(concur, request).await;
        vault
            .store_connection(member, &request.id, &tokens, Utc::now())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn keep_alive_renews_tokens_due_and_marks_expired_ones_once() {
    let (sandbox, concur, vault) = setup().await;
    connect_two(&concur, &vault).await;
    let settings = KeepAliveSettings::default();
    // Freshly connected: nothing is due.
    assert!(vault
        .due_for_renewal(Utc::now(), &settings)
        .await
        .unwrap()
        .is_empty());
    // Four months on (Concur's clock too), both are due and renewed well before their
    // six-month expiry.
    advance(&sandbox, 120).await;
    let later = Utc::now() + chrono::Duration::days(120);
    let before: Vec<_> = [vault.get("K1").await, vault.get("K2").await]
        .into_iter()
        .map(|c| c.unwrap().unwrap().token_version)
        .collect();
    let summary = vault
        .keep_alive(&concur, "keep-alive", later, &settings, far())
        .await;
    assert_eq!(
        (summary.due, summary.renewed, summary.expired),
        (2, 2, 0),
        "{summary:?}"
    );
    for (member, version) in ["K1", "K2"].iter().zip(before) {
        let stored = vault.get(member).await.unwrap().unwrap();
        assert_eq!(stored.token_version, version + 1);
        let expires =
            chrono::DateTime::parse_from_rfc3339(stored.refresh_expires_at.as_deref().unwrap())
                .unwrap();
        assert!(expires > later + chrono::Duration::days(150), "{expires}");
    }
    // A batch of one renews one.
    let one = KeepAliveSettings {
        batch: 1,
        ..settings.clone()
    };
    let summary = vault
        .keep_alive(
            &concur,
            "keep-alive",
            later + chrono::Duration::days(40),
            &one,
            far(),
        )
        .await;
    assert_eq!((summary.due, summary.renewed), (1, 1), "{summary:?}");

    // Seven more months without renewal: Concur refuses both (108); they are marked
    // expired and counted once, never tried again.
    advance(&sandbox, 220).await;
    let much_later = later + chrono::Duration::days(220);
    let summary = vault
        .keep_alive(&concur, "keep-alive", much_later, &settings, far())
        .await;
    assert_eq!(
        (summary.due, summary.renewed, summary.expired),
        (2, 0, 2),
        "{summary:?}"
    );
    for member in ["K1", "K2"] {
        assert_eq!(
            vault.get(member).await.unwrap().unwrap().token_state,
            TokenState::Expired
        );
    }
    let summary = vault
        .keep_alive(&concur, "keep-alive", much_later, &settings, far())
        .await;
    assert_eq!(summary.due, 0, "{summary:?}");
}

/// Log lines captured in memory (every level, JSON as deployed).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_token_appears_in_any_log_line() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (sandbox, concur, vault) = setup().await;
    let mut secrets: Vec<String> = Vec::new();
    let page = concur.list_page(10, None, far()).await.unwrap();
    for request in &page.items {
        secrets.push(
            request
                .request_token
                .as_ref()
                .unwrap()
                .expose_secret()
                .to_owned(),
        );
    }
    let (request_id, tokens) = connect(&concur).await;
    secrets.push(tokens.refresh_token.expose_secret().to_owned());
    secrets.push(tokens.access_token.expose_secret().to_owned());
    vault
        .store_connection("L1", &request_id, &tokens, Utc::now())
        .await
        .unwrap();
    // A refresh, a rotation write that fails once, a refused token, a keep-alive.
    vault.encryptor().fail_next.store(1, Ordering::SeqCst);
    let fresh = vault.access_token(&concur, "L1", "a", far()).await.unwrap();
    secrets.push(fresh.refresh_token.expose_secret().to_owned());
    secrets.push(fresh.access_token.expose_secret().to_owned());
    let _ = concur
        .refresh_user_token(&tokens.geolocation, &tokens.refresh_token, far())
        .await;
    let _ = vault
        .keep_alive(
            &concur,
            "k",
            Utc::now() + chrono::Duration::days(60),
            &KeepAliveSettings::default(),
            far(),
        )
        .await;
    secrets.push(vault_last(&vault));
    vault.revoke(&concur, "L1", "r", far()).await.unwrap();
    let _ = vault.access_token(&concur, "L1", "b", far()).await;
    // The app token too.
    secrets.push(
        concur
            .app_token(far())
            .await
            .unwrap()
            .expose_secret()
            .to_owned(),
    );
    drop(sandbox);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("rotated refresh token"),
        "the run was logged: {logs}"
    );
    for secret in &secrets {
        assert!(secret.len() >= 16);
        assert!(!logs.contains(secret.as_str()), "a token in the logs");
    }
}

/// Live refresh tokens of a Concur user at the sandbox (white box).
fn live_refresh_tokens(sandbox: &Sandbox, user: &str) -> usize {
    let world = sandbox.state.world();
    world
        .refresh_tokens
        .values()
        .filter(|t| t.user_id.to_string() == user && !t.revoked)
        .count()
}

#[tokio::test]
async fn a_connection_of_another_user_replaced_is_revoked_at_concur_by_the_keep_alive() {
    let (sandbox, concur, vault) = setup().await;
    let page = concur.list_page(10, None, far()).await.unwrap();
    let mut users = Vec::new();
    for request in &page.items[..2] {
        let tokens = exchange(&concur, request).await;
        let user = tokens.user_id.clone().unwrap();
        // The same member connects from two Concur users, one after the other.
        vault
            .store_connection("R", &request.id, &tokens, Utc::now())
            .await
            .unwrap();
        users.push(user);
    }
    assert_eq!(live_refresh_tokens(&sandbox, &users[0]), 1);
    let stored = vault.get("R").await.unwrap().unwrap();
    assert_eq!(stored.concur_user_id.as_deref(), Some(users[1].as_str()));

    let summary = keep_alive_now(&vault, &concur).await;
    assert_eq!(summary.replaced_revoked, 1, "{summary:?}");
    assert_eq!(
        live_refresh_tokens(&sandbox, &users[0]),
        0,
        "no orphan at Concur"
    );
    assert_eq!(
        live_refresh_tokens(&sandbox, &users[1]),
        1,
        "the new one lives"
    );
    vault.access_token(&concur, "R", "a", far()).await.unwrap();
    // Done once: nothing left to revoke.
    let again = keep_alive_now(&vault, &concur).await;
    assert_eq!(again.replaced_revoked, 0);
}

/// Two Concur users connect the same member at the same moment: whichever write lands
/// second replaces a live connection of another user, so that one is queued for its
/// revoke, never orphaned at Concur. The proxy holds both connection writes back (the
/// second longer) so that both stores have read or tried before either write lands: a
/// read-then-write would let both read "nothing stored" and the first token live on,
/// unreachable. (moto does not make concurrent conditional writes atomic as DynamoDB
/// does, so the writes are also kept apart in time.)
#[tokio::test]
async fn two_users_connecting_one_member_at_once_leave_no_orphan_at_concur() {
    use triplink_shared::fault_proxy::{FaultProxy, Op, Rule};
    let proxy = FaultProxy::start(&testing::moto().endpoint);
    let dynamo = aws_sdk_dynamodb::Client::new(&testing::local_sdk_config(proxy.endpoint()));
    let (sandbox, concur, vault) = setup_on(dynamo).await;
    let page = concur.list_page(10, None, far()).await.unwrap();
    let (first, second) = (&page.items[0], &page.items[1]);
    let a = exchange(&concur, first).await;
    let b = exchange(&concur, second).await;
    for (request, wait) in [(first, 150), (second, 600)] {
        proxy.add(
            Rule::new(Op::UpdateItem)
                .body_contains(request.id.clone())
                .delay(Duration::from_millis(wait))
                .next(1),
        );
    }
    let now = Utc::now();
    let (stored_a, stored_b) = tokio::join!(
        vault.store_connection("R", &first.id, &a, now),
        vault.store_connection("R", &second.id, &b, now),
    );
    stored_a.unwrap();
    stored_b.unwrap();
    let stored = vault.get("R").await.unwrap().unwrap();
    assert_eq!(
        stored.concur_user_id, b.user_id,
        "the later write is stored"
    );
    let loser = a.user_id.clone().unwrap();

    let summary = keep_alive_now(&vault, &concur).await;
    assert_eq!(summary.replaced_revoked, 1, "{summary:?}");
    assert_eq!(
        live_refresh_tokens(&sandbox, &loser),
        0,
        "no orphan at Concur"
    );
    assert_eq!(
        live_refresh_tokens(&sandbox, b.user_id.as_deref().unwrap()),
        1,
        "the stored one lives"
    );
    vault.access_token(&concur, "R", "a", far()).await.unwrap();
}

/// The keep-alive reads the sparse index `by-renewal`, never the whole table: with many
/// connections not yet due ahead of it (in key order), a due one is found at once, even
/// with one small page per run; an expired one is not in the index at all; and
/// connections whose renewal fails are postponed, so they never hold back the ones
/// behind them.
#[tokio::test]
async fn the_keep_alive_finds_due_tokens_through_its_index_and_failures_never_block_it() {
    use aws_sdk_dynamodb::primitives::Blob;
    use aws_sdk_dynamodb::types::AttributeValue;
    use triplink_shared::vault::{attr, KeepAliveSettings, RETRY_FAILED_UPKEEP_AFTER};
    let (sandbox, concur, vault) = setup().await;
    let dynamo = testing::dynamodb();
    let now = Utc::now();
    let ms = |at: chrono::DateTime<Utc>| AttributeValue::N(at.timestamp_millis().to_string());
    let raw = |member: String, state: &str, renew: Option<chrono::DateTime<Utc>>| {
        let mut put = dynamo
            .put_item()
            .table_name(vault.table())
            .item(attr::MEMBER_ID, AttributeValue::S(member))
            .item(
                attr::GEOLOCATION,
                AttributeValue::S(sandbox.local_url.clone()),
            )
            .item(
                attr::REFRESH_TOKEN_CIPHERTEXT,
                AttributeValue::B(Blob::new(b"not a KMS ciphertext".to_vec())),
            )
            .item(attr::TOKEN_STATE, AttributeValue::S(state.into()));
        if let Some(at) = renew {
            put = put.item(attr::RENEW_AT, ms(at));
        }
        put
    };
    // 60 connections renewed recently (due in 29 days), one expired long ago.
    for i in 0..60 {
        raw(
            format!("A-{i:03}"),
            "active",
            Some(now + chrono::Duration::days(29)),
        )
        .send()
        .await
        .unwrap();
    }
    raw("A-expired".into(), "expired", None)
        .send()
        .await
        .unwrap();
    // Two due connections whose ciphertext cannot be read (they fail), due first.
    for i in 0..2 {
        raw(
            format!("Z-broken-{i}"),
            "active",
            Some(now - chrono::Duration::days(10)),
        )
        .send()
        .await
        .unwrap();
    }
    // And one real connection made forty days ago: due ten days ago.
    let (request_id, tokens) = connect(&concur).await;
    vault
        .store_connection(
            "Z-real",
            &request_id,
            &tokens,
            now - chrono::Duration::days(40),
        )
        .await
        .unwrap();
    let stored = vault.get("Z-real").await.unwrap().unwrap();

    let small = KeepAliveSettings {
        batch: 2,
        max_pages: 1,
        ..KeepAliveSettings::default()
    };
    let mut due = vault.due_for_renewal(now, &small).await.unwrap();
    due.sort();
    assert_eq!(due, ["Z-broken-0", "Z-broken-1"], "the oldest due first");
    let everything = KeepAliveSettings::default();
    let mut due = vault.due_for_renewal(now, &everything).await.unwrap();
    due.sort();
    assert_eq!(due, ["Z-broken-0", "Z-broken-1", "Z-real"]);

    // Run 1: the two broken ones fail and are postponed by an hour.
    let first = vault.keep_alive(&concur, "k", now, &small, far()).await;
    assert_eq!(
        (first.due, first.renewed, first.failed),
        (2, 0, 2),
        "{first:?}"
    );
    // Run 2: the real one is renewed (its rotation moves renew_at on by 30 days).
    let second = vault.keep_alive(&concur, "k", now, &small, far()).await;
    assert_eq!((second.due, second.renewed), (1, 1), "{second:?}");
    let renewed = vault.get("Z-real").await.unwrap().unwrap();
    assert_eq!(renewed.token_version, stored.token_version + 1);
    // Run 3: nothing due; past the postponement the broken ones come back.
    let third = vault.keep_alive(&concur, "k", now, &small, far()).await;
    assert_eq!(third.due, 0, "{third:?}");
    let later = now + RETRY_FAILED_UPKEEP_AFTER + chrono::Duration::minutes(1);
    let mut due = vault.due_for_renewal(later, &everything).await.unwrap();
    due.sort();
    assert_eq!(due, ["Z-broken-0", "Z-broken-1"]);
}
