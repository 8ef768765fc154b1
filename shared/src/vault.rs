//! The token vault: a connected member's Concur tokens.
//!
//! * The refresh token (six-month life, may rotate on every refresh) is stored encrypted
//!   with a KMS key (`KMS_KEY_ID`), with the member id as encryption context, in the
//!   connections table, with the user's `geolocation` and Concur user id. It is never
//!   logged: in memory it is a `SecretString`.
//! * [`TokenVault::access_token`] refreshes at the user's geolocation and stores the
//!   rotated refresh token back. The refresh grant invalidates the old refresh token, so
//!   the rotated one is written durably before anything else can fail: a conditional
//!   write on the old token's `token_version` (the fence), retried on failure
//!   ([`ROTATION_WRITE_ATTEMPTS`]), with an alarm (`RotatedTokenNotStored`) if it never
//!   lands. Two refreshes never race: a refresh first takes a lease that lasts at least
//!   the whole call budget ([`refresh_lease`]), and the write is fenced by version.
//! * Each connection records `refresh_expires_at` (from `refresh_expires_in`, clamped)
//!   and a `token_state`: `active`, or `expired` after Concur refused the refresh token
//!   (OAuth 108: expired or revoked). A refused connection is never refreshed again.
//! * [`TokenVault::revoke`] revokes the connection at Concur
//!   (`DELETE /app-mgmt/v0/connections` with the user's access token) and deletes it.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::concur::{
    BaseUrl, ConcurClient, ConcurError, OAuthErrorKind, UserTokens, DEFAULT_CALL_TIMEOUT,
};
use crate::store::dynamo::{is_condition_failure, sdk_error, update_expressions as expressions};
use crate::store::layout::{members, timestamp};
use crate::store::StoreError;
use crate::telemetry::{Metrics, Unit};

/// Attribute names of the connections table.
pub mod attr {
    pub const MEMBER_ID: &str = super::members::MEMBER_ID;
    pub const CONCUR_USER_ID: &str = "concur_user_id";
    pub const GEOLOCATION: &str = "geolocation";
    pub const REFRESH_TOKEN_CIPHERTEXT: &str = "refresh_token_ciphertext";
    pub const REQUEST_ID: &str = "request_id";
    pub const CONNECTED_AT: &str = "connected_at";
    pub const REFRESHED_AT: &str = "refreshed_at";
    pub const LEASE_OWNER: &str = "lease_owner";
    pub const LEASE_UNTIL: &str = "lease_until";
    /// N: bumped by every write of a new refresh token (the fence of rotation writes).
    pub const TOKEN_VERSION: &str = "token_version";
    /// S (RFC 3339): when the stored refresh token expires.
    pub const REFRESH_EXPIRES_AT: &str = "refresh_expires_at";
    /// S: [`super::TokenState`].
    pub const TOKEN_STATE: &str = "token_state";
    /// S: on a replaced connection awaiting its revoke, the member id its token was
    /// encrypted for (the KMS encryption context).
    pub const CONTEXT_MEMBER_ID: &str = "context_member_id";
    /// N (epoch ms): when the keep-alive should renew this token (active), or revoke it
    /// (replaced); absent once expired. The sort key of [`super::BY_RENEWAL`].
    pub const RENEW_AT: &str = "renew_at";
}

/// The keep-alive's sparse index on the connections table: `token_state` (hash) and
/// [`attr::RENEW_AT`] (range), keys only. Only active and replaced connections carry
/// `renew_at`, so the keep-alive reads exactly the connections that are due, oldest
/// first, however large the vault: never a scan.
pub const BY_RENEWAL: &str = "by-renewal";

/// A connection whose renewal (or revoke, when replaced) failed is tried again this much
/// later, so that a few failing connections never hold back the index's queue.
pub const RETRY_FAILED_UPKEEP_AFTER: chrono::Duration = chrono::Duration::hours(1);

/// `TOKEN_RENEW_AFTER_DAYS` (1..=150, default 30): see [`renew_at`]. Read by every
/// function that writes refresh tokens (the worker connects, the poller renews), as
/// `renew_at` is fixed when a token is written.
pub fn renew_after_from_env(
    env: &impl crate::config::Env,
) -> Result<chrono::Duration, crate::config::ConfigError> {
    let default = KeepAliveSettings::default().renew_after.num_days();
    let days: i64 = env.parsed("TOKEN_RENEW_AFTER_DAYS", default)?;
    if !(1..=150).contains(&days) {
        return Err(crate::config::ConfigError::Invalid {
            key: "TOKEN_RENEW_AFTER_DAYS",
            value: days.to_string(),
            reason: "must be 1..=150 (refresh tokens live six months)".into(),
        });
    }
    Ok(chrono::Duration::days(days))
}

/// When a token stored or rotated at `now`, expiring at `expires_at`, is due for
/// renewal: `renew_after` later, or halfway to its expiry if it lives less than twice
/// that (so a short-lived token is renewed in time, and not on every run).
pub fn renew_at(
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    renew_after: chrono::Duration,
) -> DateTime<Utc> {
    let life = expires_at - now;
    if life > renew_after * 2 {
        now + renew_after
    } else {
        now + (life / 2).max(chrono::Duration::zero())
    }
}

/// Key prefix of a replaced connection awaiting its revoke at Concur.
pub const REPLACED_PREFIX: &str = "replaced#";

/// The shortest refresh lease: one whole call (the client's call timeout) and room for
/// the durable write of the rotated token after it.
pub const REFRESH_LEASE_MIN: Duration = Duration::from_secs(DEFAULT_CALL_TIMEOUT.as_secs() + 30);

/// How many times the rotated token's write is tried before the alarm.
pub const ROTATION_WRITE_ATTEMPTS: u32 = 5;

/// How long a refresh lease taken now lasts: past the caller's deadline (the refresh
/// call cannot outlive it) plus the rotation write, and never less than
/// [`REFRESH_LEASE_MIN`].
pub fn refresh_lease(deadline: Instant) -> Duration {
    let left = deadline.saturating_duration_since(Instant::now());
    (left + Duration::from_secs(30)).max(REFRESH_LEASE_MIN)
}

/// Whether a stored refresh token can still be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    Active,
    /// Concur refused it (OAuth 108: expired or revoked). The member must connect again.
    Expired,
    /// The connection of another Concur user that a new connection of the member
    /// replaced: kept only until the keep-alive revokes it at Concur.
    Replaced,
}

impl TokenState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Replaced => "replaced",
        }
    }

    fn parse(value: Option<&str>) -> Self {
        match value {
            Some("expired") => Self::Expired,
            Some("replaced") => Self::Replaced,
            _ => Self::Active,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("member {0} has no Concur connection")]
    NotConnected(String),
    #[error("another refresh of member {0}'s tokens is under way")]
    Busy(String),
    #[error("member {0}'s refresh token was refused by Concur (expired or revoked)")]
    Expired(String),
    #[error("member {0}'s rotated refresh token could not be stored")]
    RotationNotStored(String),
    #[error("encryption failed: {0}")]
    Crypto(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Concur(#[from] ConcurError),
    #[error("stored connection of member {member_id} is unreadable: {message}")]
    Corrupt { member_id: String, message: String },
}

impl VaultError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Busy(_) => true,
            Self::Crypto(_) => true,
            Self::Store(e) => e.is_transient(),
            Self::Concur(e) => e.is_transient(),
            Self::NotConnected(_)
            | Self::Corrupt { .. }
            | Self::Expired(_)
            | Self::RotationNotStored(_) => false,
        }
    }
}

/// Encrypts refresh tokens at rest.
pub trait Encryptor: Send + Sync {
    fn encrypt(
        &self,
        plaintext: &SecretString,
        member_id: &str,
    ) -> impl Future<Output = Result<Vec<u8>, VaultError>> + Send;
    fn decrypt(
        &self,
        ciphertext: &[u8],
        member_id: &str,
    ) -> impl Future<Output = Result<SecretString, VaultError>> + Send;
}

/// KMS encryption with the member id as encryption context.
#[derive(Clone)]
pub struct KmsEncryptor {
    client: aws_sdk_kms::Client,
    key_id: String,
}

impl KmsEncryptor {
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Self {
            client,
            key_id: key_id.into(),
        }
    }

    /// A KMS client from an AWS configuration.
    pub fn from_sdk_config(aws: &aws_config::SdkConfig, key_id: impl Into<String>) -> Self {
        Self::new(aws_sdk_kms::Client::new(aws), key_id)
    }
}

const CONTEXT_KEY: &str = "triplink:member_id";

impl Encryptor for KmsEncryptor {
    async fn encrypt(
        &self,
        plaintext: &SecretString,
        member_id: &str,
    ) -> Result<Vec<u8>, VaultError> {
        let output = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(aws_sdk_kms::primitives::Blob::new(
                plaintext.expose_secret().as_bytes(),
            ))
            .encryption_context(CONTEXT_KEY, member_id)
            .send()
            .await
            .map_err(|e| {
                VaultError::Crypto(aws_sdk_kms::error::DisplayErrorContext(e).to_string())
            })?;
        output
            .ciphertext_blob
            .map(|b| b.into_inner())
            .ok_or_else(|| VaultError::Crypto("KMS returned no ciphertext".into()))
    }

    async fn decrypt(
        &self,
        ciphertext: &[u8],
        member_id: &str,
    ) -> Result<SecretString, VaultError> {
        let output = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(ciphertext))
            .encryption_context(CONTEXT_KEY, member_id)
            .send()
            .await
            .map_err(|e| {
                VaultError::Crypto(aws_sdk_kms::error::DisplayErrorContext(e).to_string())
            })?;
        let bytes = output
            .plaintext
            .map(|b| b.into_inner())
            .ok_or_else(|| VaultError::Crypto("KMS returned no plaintext".into()))?;
        String::from_utf8(bytes)
            .map(SecretString::from)
            .map_err(|_| VaultError::Crypto("decrypted token is not UTF-8".into()))
    }
}

/// A stored connection, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredConnection {
    pub member_id: String,
    pub concur_user_id: Option<String>,
    pub geolocation: String,
    pub request_id: Option<String>,
    pub connected_at: Option<String>,
    pub refreshed_at: Option<String>,
    pub refresh_expires_at: Option<String>,
    pub token_version: u64,
    pub token_state: TokenState,
    ciphertext: Vec<u8>,
}

impl StoredConnection {
    /// The stored ciphertext (tests check it is not the plaintext).
    pub fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
    }
}

fn text(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

fn parse(
    member_id: &str,
    item: HashMap<String, AttributeValue>,
) -> Result<StoredConnection, VaultError> {
    let corrupt = |message: &str| VaultError::Corrupt {
        member_id: member_id.to_owned(),
        message: message.to_owned(),
    };
    Ok(StoredConnection {
        member_id: member_id.to_owned(),
        concur_user_id: text(&item, attr::CONCUR_USER_ID),
        geolocation: text(&item, attr::GEOLOCATION).ok_or_else(|| corrupt("no geolocation"))?,
        request_id: text(&item, attr::REQUEST_ID),
        connected_at: text(&item, attr::CONNECTED_AT),
        refreshed_at: text(&item, attr::REFRESHED_AT),
        refresh_expires_at: text(&item, attr::REFRESH_EXPIRES_AT),
        token_version: item
            .get(attr::TOKEN_VERSION)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        token_state: TokenState::parse(text(&item, attr::TOKEN_STATE).as_deref()),
        ciphertext: item
            .get(attr::REFRESH_TOKEN_CIPHERTEXT)
            .and_then(|v| v.as_b().ok())
            .map(|b| b.as_ref().to_vec())
            .ok_or_else(|| corrupt("no refresh token"))?,
    })
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// The keep-alive's knobs.
#[derive(Debug, Clone)]
pub struct KeepAliveSettings {
    /// Members renewed per run at most.
    pub batch: usize,
    /// Renew a token refreshed longer ago than this (or halfway to its expiry if it
    /// lives less than twice this): see [`renew_at`]. Set on the vault
    /// ([`TokenVault::with_renew_after`]): it is fixed when a token is written.
    pub renew_after: chrono::Duration,
    /// Index pages read per run at most.
    pub max_pages: u32,
}

impl Default for KeepAliveSettings {
    fn default() -> Self {
        Self {
            batch: 25,
            renew_after: chrono::Duration::days(30),
            max_pages: 20,
        }
    }
}

/// What one keep-alive run did (counts only).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct KeepAliveSummary {
    pub due: u32,
    pub renewed: u32,
    /// Refused by Concur (expired or revoked): marked, never retried.
    pub expired: u32,
    /// Another refresh held the lease.
    pub busy: u32,
    pub failed: u32,
    /// Left for the next run (the deadline came first).
    pub not_reached: u32,
    /// Replaced connections of another Concur user revoked at Concur.
    pub replaced_revoked: u32,
}

/// A keep-alive the poller runs after its poll (object-safe, so the poller need not
/// name the encryptor).
pub trait KeepAliveRun: Send + Sync {
    fn run(
        &self,
        deadline: Instant,
    ) -> std::pin::Pin<Box<dyn Future<Output = KeepAliveSummary> + Send + '_>>;
}

/// The deployed keep-alive: the vault, the Concur client and the knobs.
pub struct KeepAlive<E> {
    pub vault: TokenVault<E>,
    pub concur: std::sync::Arc<ConcurClient>,
    pub settings: KeepAliveSettings,
    /// The lease owner written while a token is refreshed.
    pub owner: String,
}

impl<E: Encryptor> KeepAliveRun for KeepAlive<E> {
    fn run(
        &self,
        deadline: Instant,
    ) -> std::pin::Pin<Box<dyn Future<Output = KeepAliveSummary> + Send + '_>> {
        Box::pin(async move {
            self.vault
                .keep_alive(
                    &self.concur,
                    &self.owner,
                    Utc::now(),
                    &self.settings,
                    deadline,
                )
                .await
        })
    }
}

/// How a conditional write of a rotated token ended.
enum RotationWrite {
    Stored,
    /// The stored version is not the refreshed token's any more.
    Superseded,
}

/// The condition that the stored token is still version `version` (0: written before
/// versions existed).
fn version_condition(version: u64) -> &'static str {
    if version == 0 {
        "attribute_not_exists(#version)"
    } else {
        "#version = :version"
    }
}

/// The value [`version_condition`] may use (left out of the update when it does not).
fn version_value(version: u64) -> (&'static str, AttributeValue) {
    (":version", AttributeValue::N(version.to_string()))
}

/// How many times a connection write is tried against concurrent replacements.
const STORE_ROUNDS: u32 = 3;

/// The placeholders of attribute names any connections-table update may use.
const NAMES: &[(&str, &str)] = &[
    ("#id", attr::MEMBER_ID),
    ("#geo", attr::GEOLOCATION),
    ("#cipher", attr::REFRESH_TOKEN_CIPHERTEXT),
    ("#request", attr::REQUEST_ID),
    ("#connected", attr::CONNECTED_AT),
    ("#refreshed", attr::REFRESHED_AT),
    ("#expires", attr::REFRESH_EXPIRES_AT),
    ("#state", attr::TOKEN_STATE),
    ("#version", attr::TOKEN_VERSION),
    ("#owner", attr::LEASE_OWNER),
    ("#until", attr::LEASE_UNTIL),
    ("#user", attr::CONCUR_USER_ID),
    ("#renew", attr::RENEW_AT),
];

/// The connections table with its encryption.
pub struct TokenVault<E> {
    dynamo: aws_sdk_dynamodb::Client,
    table: String,
    encryptor: E,
    metrics: Metrics,
    renew_after: chrono::Duration,
}

impl<E: Encryptor> TokenVault<E> {
    /// An update of the connection under `key`.
    fn update(
        &self,
        key: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.dynamo
            .update_item()
            .table_name(&self.table)
            .key(attr::MEMBER_ID, s(key))
    }

    pub fn new(dynamo: aws_sdk_dynamodb::Client, table: impl Into<String>, encryptor: E) -> Self {
        Self {
            dynamo,
            table: table.into(),
            encryptor,
            metrics: Metrics::disabled("vault"),
            renew_after: KeepAliveSettings::default().renew_after,
        }
    }

    /// How long after a write a token is due for renewal (`TOKEN_RENEW_AFTER_DAYS`,
    /// default 30 days; see [`renew_at`]).
    pub fn with_renew_after(mut self, renew_after: chrono::Duration) -> Self {
        self.renew_after = renew_after;
        self
    }

    fn renew_value(&self, now: DateTime<Utc>, expires_at: DateTime<Utc>) -> AttributeValue {
        let at = renew_at(now, expires_at, self.renew_after);
        AttributeValue::N(at.timestamp_millis().to_string())
    }

    /// Emit the vault's alarms (`RotatedTokenNotStored`) through these metrics.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn encryptor(&self) -> &E {
        &self.encryptor
    }

    /// Store (or replace) a member's connection after a successful token exchange. The
    /// write bumps `token_version`, so a refresh of a replaced token can never write over
    /// the new one. Returns the Concur user id of the connection it replaced, if any
    /// (`Some(None)`: one without a user id).
    pub async fn store_connection(
        &self,
        member_id: &str,
        request_id: &str,
        tokens: &UserTokens,
        now: DateTime<Utc>,
    ) -> Result<Option<Option<String>>, VaultError> {
        let ciphertext = self
            .encryptor
            .encrypt(&tokens.refresh_token, member_id)
            .await?;
        // The live connection of another Concur user would be orphaned at Concur: it is
        // kept aside (before the write replaces it) for the keep-alive to revoke. The
        // same user's older token is simply replaced (a revoke would end the new one).
        // The write is conditioned on there being no such connection, so the common case
        // (a first connection, or the same user's) costs no read; when the condition
        // fails, the stored connection is read, queued, and the write retried fenced on
        // the version that was queued.
        let mut set = String::from(
            "SET #geo = :geo, #cipher = :cipher, #request = :request, #connected = :now, \
             #refreshed = :now, #expires = :expires, #state = :active, #renew = :renew",
        );
        let mut values = vec![
            (":geo", s(tokens.geolocation.as_str())),
            (":cipher", AttributeValue::B(Blob::new(ciphertext))),
            (":request", s(request_id)),
            (":now", s(timestamp(now))),
            (":expires", s(timestamp(tokens.refresh_expires_at))),
            (":active", s(TokenState::Active.as_str())),
            (":one", AttributeValue::N("1".into())),
            (":renew", self.renew_value(now, tokens.refresh_expires_at)),
            (":expired", s(TokenState::Expired.as_str())),
            (":replaced", s(TokenState::Replaced.as_str())),
        ];
        let mut remove = String::from(" REMOVE #owner, #until");
        match &tokens.user_id {
            Some(user_id) => {
                set.push_str(", #user = :user");
                values.push((":user", s(user_id.clone())));
            }
            None => remove.push_str(", #user"),
        }
        let expression = format!("{set} ADD #version :one{remove}");
        // No other user's live connection (a connection without a state is active).
        const NO_OTHER_LIVE: &str = "attribute_not_exists(#user) OR #user = :user \
                                     OR #state = :expired OR #state = :replaced";
        let mut condition = tokens.user_id.as_ref().map(|_| NO_OTHER_LIVE.to_owned());
        let mut output = None;
        for _ in 0..STORE_ROUNDS {
            let result = expressions(
                self.update(member_id),
                &expression,
                condition.as_deref(),
                NAMES,
                values.clone(),
            )
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await;
            match result {
                Ok(written) => {
                    output = Some(written);
                    break;
                }
                Err(e) if is_condition_failure(&e) => {}
                Err(e) => return Err(sdk_error("UpdateItem", e).into()),
            }
            // Another user's live connection is stored (or was, a moment ago).
            let Some(old) = self.get(member_id).await? else {
                condition = tokens.user_id.as_ref().map(|_| NO_OTHER_LIVE.to_owned());
                continue;
            };
            let another_user = matches!(
                (&old.concur_user_id, &tokens.user_id),
                (Some(a), Some(b)) if a != b
            );
            if another_user && old.token_state == TokenState::Active {
                self.queue_revoke(&old, now).await?;
                info!(
                    member_id,
                    "the member's connection of another Concur user is replaced; its revoke is queued"
                );
            }
            // Replace exactly what was read (and queued); anything newer is read again.
            let seen = if old.token_version == 0 {
                "attribute_not_exists(#version)"
            } else {
                "#version = :seen"
            };
            condition = Some(format!("({NO_OTHER_LIVE}) OR {seen}"));
            values.retain(|(name, _)| *name != ":seen");
            values.push((":seen", AttributeValue::N(old.token_version.to_string())));
        }
        let Some(output) = output else {
            return Err(StoreError::Contention {
                id: member_id.to_owned(),
                tries: STORE_ROUNDS,
            }
            .into());
        };
        let replaced = output
            .attributes
            .filter(|old| old.contains_key(attr::REFRESH_TOKEN_CIPHERTEXT))
            .map(|old| text(&old, attr::CONCUR_USER_ID));
        if replaced.is_some() {
            info!(
                member_id,
                "an earlier connection of the member was replaced"
            );
        }
        Ok(replaced)
    }

    /// Keep a replaced connection aside, under its own key, for its revoke.
    async fn queue_revoke(
        &self,
        old: &StoredConnection,
        now: DateTime<Utc>,
    ) -> Result<(), VaultError> {
        let key = format!("{REPLACED_PREFIX}{}#{}", old.member_id, old.token_version);
        let mut put = self
            .dynamo
            .put_item()
            .table_name(&self.table)
            .item(attr::MEMBER_ID, s(key))
            .item(attr::CONTEXT_MEMBER_ID, s(old.member_id.clone()))
            .item(attr::GEOLOCATION, s(old.geolocation.clone()))
            .item(
                attr::REFRESH_TOKEN_CIPHERTEXT,
                AttributeValue::B(Blob::new(old.ciphertext.clone())),
            )
            .item(attr::TOKEN_STATE, s(TokenState::Replaced.as_str()))
            .item(attr::REFRESHED_AT, s(timestamp(now)))
            .item(
                attr::RENEW_AT,
                AttributeValue::N(now.timestamp_millis().to_string()),
            );
        if let Some(user) = &old.concur_user_id {
            put = put.item(attr::CONCUR_USER_ID, s(user.clone()));
        }
        put.send().await.map_err(|e| sdk_error("PutItem", e))?;
        Ok(())
    }

    /// Revoke at Concur (and then delete) up to `batch` replaced connections awaiting
    /// it. Returns (revoked, failed).
    pub async fn revoke_replaced(
        &self,
        concur: &ConcurClient,
        batch: usize,
        deadline: Instant,
    ) -> (u32, u32) {
        let (mut revoked, mut failed) = (0, 0);
        let keys = match self
            .due_in_state(TokenState::Replaced, Utc::now(), batch, 1)
            .await
        {
            Ok(keys) => keys,
            Err(e) => {
                warn!(error = %e, "could not list replaced connections");
                return (0, 1);
            }
        };
        for key in keys {
            let item = match self.read(&key).await {
                Ok(Some(item)) => item,
                Ok(None) => continue, // revoked meanwhile
                Err(e) => {
                    warn!(error = %e, "could not read a replaced connection");
                    failed += 1;
                    continue;
                }
            };
            let Some(context) = text(&item, attr::CONTEXT_MEMBER_ID) else {
                self.postpone(&key, Utc::now() + RETRY_FAILED_UPKEEP_AFTER)
                    .await;
                continue;
            };
            match self
                .revoke_one_replaced(concur, &key, &context, item, deadline)
                .await
            {
                Ok(()) => revoked += 1,
                Err(e) => {
                    warn!(member_id = %context, error = %e, "a replaced connection could not be revoked yet");
                    failed += 1;
                    self.postpone(&key, Utc::now() + RETRY_FAILED_UPKEEP_AFTER)
                        .await;
                }
            }
        }
        (revoked, failed)
    }

    async fn revoke_one_replaced(
        &self,
        concur: &ConcurClient,
        key: &str,
        context: &str,
        item: HashMap<String, AttributeValue>,
        deadline: Instant,
    ) -> Result<(), VaultError> {
        let old = parse(key, item)?;
        let refresh = self.encryptor.decrypt(&old.ciphertext, context).await?;
        let geolocation = BaseUrl::parse(&old.geolocation).map_err(|e| VaultError::Corrupt {
            member_id: context.to_owned(),
            message: e.to_string(),
        })?;
        match concur
            .refresh_user_token(&geolocation, &refresh, deadline)
            .await
        {
            Ok(tokens) => {
                // Keep the rotated token until Concur confirmed the revoke.
                let ciphertext = self
                    .encryptor
                    .encrypt(&tokens.refresh_token, context)
                    .await?;
                let cipher = (":cipher", AttributeValue::B(Blob::new(ciphertext)));
                expressions(
                    self.update(key),
                    "SET #cipher = :cipher",
                    None,
                    NAMES,
                    vec![cipher],
                )
                .send()
                .await
                .map_err(|e| sdk_error("UpdateItem", e))?;
                concur
                    .revoke_connection(&tokens.geolocation, &tokens.access_token, deadline)
                    .await?;
            }
            // Nothing left to revoke there.
            Err(e) if e.oauth_kind() == Some(OAuthErrorKind::RefreshTokenInvalid) => {}
            Err(e) => return Err(e.into()),
        }
        self.dynamo
            .delete_item()
            .table_name(&self.table)
            .key(attr::MEMBER_ID, s(key))
            .send()
            .await
            .map_err(|e| sdk_error("DeleteItem", e))?;
        info!(
            member_id = context,
            "a replaced connection was revoked at Concur"
        );
        Ok(())
    }

    /// A member's stored connection (no secret in it).
    pub async fn get(&self, member_id: &str) -> Result<Option<StoredConnection>, VaultError> {
        self.read(member_id)
            .await?
            .map(|item| parse(member_id, item))
            .transpose()
    }

    /// The item under `key`, read consistently.
    async fn read(&self, key: &str) -> Result<Option<HashMap<String, AttributeValue>>, VaultError> {
        let output = self
            .dynamo
            .get_item()
            .table_name(&self.table)
            .key(attr::MEMBER_ID, s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        Ok(output.item)
    }

    async fn take_lease(
        &self,
        member_id: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<StoredConnection, VaultError> {
        let now = Utc::now().timestamp_millis();
        let until = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        let result = expressions(
            self.update(member_id),
            "SET #owner = :owner, #until = :until",
            Some("attribute_exists(#id) AND (attribute_not_exists(#until) OR #until < :now)"),
            NAMES,
            vec![
                (":owner", s(owner)),
                (":until", AttributeValue::N(until.to_string())),
                (":now", AttributeValue::N(now.to_string())),
            ],
        )
        .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
        .send()
        .await;
        match result {
            Ok(output) => parse(member_id, output.attributes.unwrap_or_default()),
            Err(e) if is_condition_failure(&e) => match self.get(member_id).await? {
                None => Err(VaultError::NotConnected(member_id.to_owned())),
                Some(_) => Err(VaultError::Busy(member_id.to_owned())),
            },
            Err(e) => Err(sdk_error("UpdateItem", e).into()),
        }
    }

    /// Take the refresh lease, waiting (bounded by `deadline`) while another holds it.
    async fn lease(
        &self,
        member_id: &str,
        owner: &str,
        deadline: Instant,
    ) -> Result<StoredConnection, VaultError> {
        loop {
            match self
                .take_lease(member_id, owner, refresh_lease(deadline))
                .await
            {
                Err(VaultError::Busy(_))
                    if Instant::now() + Duration::from_millis(100) < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    /// Give the lease up without a new token (a refresh that failed before Concur
    /// answered with one). Fenced by owner: a lease taken over is left alone.
    async fn release(&self, member_id: &str, owner: &str) -> Result<(), VaultError> {
        let result = expressions(
            self.update(member_id),
            "REMOVE #owner, #until",
            Some("#owner = :owner"),
            NAMES,
            vec![(":owner", s(owner))],
        )
        .send()
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(sdk_error("UpdateItem", e).into()),
        }
    }

    /// Mark a connection whose refresh token Concur refused (108), fenced by the version
    /// that was refused (a newer token stored meanwhile is left alone).
    async fn mark_expired(&self, member_id: &str, version: u64) -> Result<(), VaultError> {
        let result = expressions(
            self.update(member_id),
            "SET #state = :expired REMOVE #owner, #until, #renew",
            Some(version_condition(version)),
            NAMES,
            vec![
                version_value(version),
                (":expired", s(TokenState::Expired.as_str())),
            ],
        )
        .send()
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(sdk_error("UpdateItem", e).into()),
        }
    }

    /// One conditional write of a rotated token on the old token's version.
    async fn write_rotated(
        &self,
        member_id: &str,
        version: u64,
        tokens: &UserTokens,
    ) -> Result<RotationWrite, VaultError> {
        let ciphertext = self
            .encryptor
            .encrypt(&tokens.refresh_token, member_id)
            .await?;
        let now = Utc::now();
        let values = vec![
            version_value(version),
            (":cipher", AttributeValue::B(Blob::new(ciphertext))),
            (":geo", s(tokens.geolocation.as_str())),
            (":now", s(timestamp(now))),
            (":expires", s(timestamp(tokens.refresh_expires_at))),
            (":renew", self.renew_value(now, tokens.refresh_expires_at)),
            (":active", s(TokenState::Active.as_str())),
            (":next", AttributeValue::N((version + 1).to_string())),
        ];
        let result = expressions(
            self.update(member_id),
            "SET #cipher = :cipher, #geo = :geo, #refreshed = :now, #expires = :expires, \
             #state = :active, #version = :next, #renew = :renew REMOVE #owner, #until",
            Some(version_condition(version)),
            NAMES,
            values,
        )
        .send()
        .await;
        match result {
            Ok(_) => Ok(RotationWrite::Stored),
            Err(e) if is_condition_failure(&e) => Ok(RotationWrite::Superseded),
            Err(e) => Err(sdk_error("UpdateItem", e).into()),
        }
    }

    /// Store a rotated refresh token durably: the old one is dead at Concur once the
    /// grant answered, so the write is retried (encryption included) and, if it never
    /// lands, logged as an error and counted (`RotatedTokenNotStored`, alarmed).
    async fn store_rotated(
        &self,
        member_id: &str,
        version: u64,
        tokens: &UserTokens,
    ) -> Result<(), VaultError> {
        let mut wait = Duration::from_millis(100);
        for attempt in 1..=ROTATION_WRITE_ATTEMPTS {
            match self.write_rotated(member_id, version, tokens).await {
                Ok(RotationWrite::Stored) => {
                    if attempt > 1 {
                        warn!(
                            member_id,
                            attempt, "rotated refresh token stored after retries"
                        );
                    }
                    return Ok(());
                }
                Ok(RotationWrite::Superseded) => {
                    // A newer connection was stored (or the member unlinked) meanwhile:
                    // ours is not the member's token any more.
                    warn!(
                        member_id,
                        version,
                        "the connection changed during the refresh; rotated token not stored"
                    );
                    return Ok(());
                }
                Err(e) if attempt < ROTATION_WRITE_ATTEMPTS => {
                    warn!(member_id, attempt, error = %e, "rotated refresh token not stored yet; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    error!(
                        member_id,
                        attempts = attempt,
                        error = %e,
                        alarm = "RotatedTokenNotStored",
                        "rotated refresh token could not be stored: the member must connect again"
                    );
                    self.metrics.emit(
                        &[("RotatedTokenNotStored", 1.0, Unit::Count)],
                        serde_json::Map::new(),
                    );
                }
            }
        }
        Err(VaultError::RotationNotStored(member_id.to_owned()))
    }

    /// A fresh access token for a connected member: refresh at the user's geolocation,
    /// store the rotated refresh token, geolocation and expiry back, under a lease. A
    /// refresh token Concur refuses (108) marks the connection `expired`; an expired
    /// connection is never sent to Concur again.
    pub async fn access_token(
        &self,
        concur: &ConcurClient,
        member_id: &str,
        owner: &str,
        deadline: Instant,
    ) -> Result<UserTokens, VaultError> {
        let stored = self.lease(member_id, owner, deadline).await?;
        if stored.token_state == TokenState::Expired {
            self.release(member_id, owner).await?;
            return Err(VaultError::Expired(member_id.to_owned()));
        }
        let refreshed = async {
            let refresh = self
                .encryptor
                .decrypt(&stored.ciphertext, member_id)
                .await?;
            let geolocation =
                BaseUrl::parse(&stored.geolocation).map_err(|e| VaultError::Corrupt {
                    member_id: member_id.to_owned(),
                    message: e.to_string(),
                })?;
            Ok::<_, VaultError>(
                concur
                    .refresh_user_token(&geolocation, &refresh, deadline)
                    .await?,
            )
        }
        .await;
        match refreshed {
            // The old token is spent: nothing may fail before the new one is stored.
            Ok(tokens) => {
                self.store_rotated(member_id, stored.token_version, &tokens)
                    .await?;
                Ok(tokens)
            }
            Err(VaultError::Concur(e))
                if e.oauth_kind() == Some(OAuthErrorKind::RefreshTokenInvalid) =>
            {
                warn!(
                    member_id,
                    "Concur refused the refresh token (expired or revoked)"
                );
                self.mark_expired(member_id, stored.token_version).await?;
                Err(VaultError::Expired(member_id.to_owned()))
            }
            Err(e) => {
                self.release(member_id, owner).await?;
                Err(e)
            }
        }
    }

    /// Members whose refresh token is due for renewal at `now` (active, `renew_at`
    /// passed), oldest first: a query of [`BY_RENEWAL`] bounded by `batch` members and
    /// `max_pages` pages. Expired connections are not in the index.
    pub async fn due_for_renewal(
        &self,
        now: DateTime<Utc>,
        settings: &KeepAliveSettings,
    ) -> Result<Vec<String>, VaultError> {
        self.due_in_state(TokenState::Active, now, settings.batch, settings.max_pages)
            .await
    }

    /// Keys of connections in `state` whose `renew_at` is at or before `now`, oldest
    /// first, at most `limit` (the index is eventually consistent: each one is read
    /// again, consistently and under its lease, before anything is done).
    async fn due_in_state(
        &self,
        state: TokenState,
        now: DateTime<Utc>,
        limit: usize,
        max_pages: u32,
    ) -> Result<Vec<String>, VaultError> {
        let mut due = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        for _ in 0..max_pages.max(1) {
            if due.len() >= limit {
                break;
            }
            let page = self
                .dynamo
                .query()
                .table_name(&self.table)
                .index_name(BY_RENEWAL)
                .key_condition_expression("#state = :state AND #renew <= :now")
                .expression_attribute_names("#state", attr::TOKEN_STATE)
                .expression_attribute_names("#renew", attr::RENEW_AT)
                .expression_attribute_values(":state", s(state.as_str()))
                .expression_attribute_values(
                    ":now",
                    AttributeValue::N(now.timestamp_millis().to_string()),
                )
                .limit((limit - due.len()).min(1000) as i32)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            due.extend(
                page.items
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|item| text(item, attr::MEMBER_ID)),
            );
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        due.truncate(limit);
        Ok(due)
    }

    /// Move a connection's `renew_at` on to `until` (only if it still has one: an expired
    /// connection stays out of the index). Best effort: a failure is logged.
    async fn postpone(&self, key: &str, until: DateTime<Utc>) {
        let result = self
            .dynamo
            .update_item()
            .table_name(&self.table)
            .key(attr::MEMBER_ID, s(key))
            .condition_expression("attribute_exists(#renew)")
            .update_expression("SET #renew = :until")
            .expression_attribute_names("#renew", attr::RENEW_AT)
            .expression_attribute_values(
                ":until",
                AttributeValue::N(until.timestamp_millis().to_string()),
            )
            .send()
            .await;
        match result {
            Ok(_) => {}
            Err(e) if is_condition_failure(&e) => {}
            Err(e) => {
                warn!(member_id = key, error = %sdk_error("UpdateItem", e), "could not postpone a connection's upkeep")
            }
        }
    }

    /// Renew a bounded batch of refresh tokens due at `now` (see [`Self::due_for_renewal`]):
    /// each is refreshed (and its rotation stored) like any other refresh. Tokens Concur
    /// refuses (108: expired or revoked) are marked `expired` and counted, never tried
    /// again.
    pub async fn keep_alive(
        &self,
        concur: &ConcurClient,
        owner: &str,
        now: DateTime<Utc>,
        settings: &KeepAliveSettings,
        deadline: Instant,
    ) -> KeepAliveSummary {
        let mut summary = KeepAliveSummary::default();
        let due = match self.due_for_renewal(now, settings).await {
            Ok(due) => due,
            Err(e) => {
                warn!(error = %e, "could not list the refresh tokens due for renewal");
                summary.failed += 1;
                return summary;
            }
        };
        summary.due = due.len() as u32;
        for member_id in &due {
            if Instant::now() >= deadline {
                summary.not_reached += 1;
                continue;
            }
            match self.access_token(concur, member_id, owner, deadline).await {
                Ok(_) => summary.renewed += 1,
                Err(VaultError::Expired(_)) => summary.expired += 1,
                Err(VaultError::Busy(_)) => summary.busy += 1,
                Err(VaultError::NotConnected(_)) => {}
                Err(e) => {
                    warn!(member_id, error = %e, "refresh token renewal failed");
                    summary.failed += 1;
                    // Not first in line again on the next run: one bad connection never
                    // holds back the ones behind it.
                    self.postpone(member_id, now + RETRY_FAILED_UPKEEP_AFTER)
                        .await;
                    // Concur asked for a pause: leave the rest for a later run.
                    if matches!(&e, VaultError::Concur(c) if c.pause().is_some()) {
                        return summary;
                    }
                }
            }
        }
        if Instant::now() < deadline {
            let (revoked, failed) = self.revoke_replaced(concur, settings.batch, deadline).await;
            summary.replaced_revoked = revoked;
            summary.failed += failed;
        }
        summary
    }

    /// Revoke a member's connection at Concur (`DELETE /app-mgmt/v0/connections` with an
    /// access token from a refresh) and delete it here: a member unlinks. A connection
    /// Concur already refuses (108, marked `expired`) has nothing left to revoke there and
    /// is only deleted. The entry is deleted only after Concur confirmed the revoke, so a
    /// failed revoke can be tried again.
    pub async fn revoke(
        &self,
        concur: &ConcurClient,
        member_id: &str,
        owner: &str,
        deadline: Instant,
    ) -> Result<Revoked, VaultError> {
        let revoked = match self.access_token(concur, member_id, owner, deadline).await {
            Ok(tokens) => {
                concur
                    .revoke_connection(&tokens.geolocation, &tokens.access_token, deadline)
                    .await?;
                Revoked::AtConcurAndHere
            }
            Err(VaultError::Expired(_)) => Revoked::HereOnly,
            Err(e) => return Err(e),
        };
        self.dynamo
            .delete_item()
            .table_name(&self.table)
            .key(attr::MEMBER_ID, s(member_id))
            .send()
            .await
            .map_err(|e| sdk_error("DeleteItem", e))?;
        info!(
            member_id,
            at_concur = revoked == Revoked::AtConcurAndHere,
            "connection revoked"
        );
        Ok(revoked)
    }
}

/// What a revoke did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Revoked {
    /// Revoked at Concur, then deleted from the vault.
    AtConcurAndHere,
    /// Concur had already refused the refresh token (expired or revoked): deleted here.
    HereOnly,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_falls_due_after_the_window_or_halfway_for_short_lived_tokens() {
        let now = Utc::now();
        let days = chrono::Duration::days;
        // Six months: renewed after the window.
        assert_eq!(renew_at(now, now + days(180), days(30)), now + days(30));
        // Ten days: halfway, not at once (and so not on every run).
        assert_eq!(renew_at(now, now + days(10), days(30)), now + days(5));
        // Already expired: due now, never in the past of the write.
        assert_eq!(renew_at(now, now - days(1), days(30)), now);
    }
}
