//! The token vault: a connected member's Concur tokens.
//!
//! * The refresh token (six-month life, may rotate on every refresh) is stored encrypted
//!   with a KMS key (`KMS_KEY_ID`), with the member id as encryption context, in the
//!   connections table, with the user's `geolocation` and Concur user id. It is never
//!   logged: in memory it is a `SecretString`.
//! * [`TokenVault::access_token`] refreshes at the user's geolocation and stores the
//!   rotated refresh token back. Two refreshes never race: a refresh first takes a lease
//!   with a conditional write, and only the lease holder writes the rotated token.
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
use tracing::info;

use crate::concur::{BaseUrl, ConcurClient, ConcurError, UserTokens};
use crate::store::dynamo::sdk_error;
use crate::store::layout::{members, timestamp};
use crate::store::StoreError;

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
}

/// How long a refresh lease lasts: longer than one refresh call can take.
pub const REFRESH_LEASE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("member {0} has no Concur connection")]
    NotConnected(String),
    #[error("another refresh of member {0}'s tokens is under way")]
    Busy(String),
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
            Self::NotConnected(_) | Self::Corrupt { .. } => false,
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

fn is_condition_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(
    error: &aws_sdk_dynamodb::error::SdkError<E, R>,
) -> bool {
    error
        .as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

/// The connections table with its encryption.
pub struct TokenVault<E> {
    dynamo: aws_sdk_dynamodb::Client,
    table: String,
    encryptor: E,
}

impl<E: Encryptor> TokenVault<E> {
    pub fn new(dynamo: aws_sdk_dynamodb::Client, table: impl Into<String>, encryptor: E) -> Self {
        Self {
            dynamo,
            table: table.into(),
            encryptor,
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn encryptor(&self) -> &E {
        &self.encryptor
    }

    /// Store (or replace) a member's connection after a successful token exchange.
    pub async fn store_connection(
        &self,
        member_id: &str,
        request_id: &str,
        tokens: &UserTokens,
        now: DateTime<Utc>,
    ) -> Result<(), VaultError> {
        let ciphertext = self
            .encryptor
            .encrypt(&tokens.refresh_token, member_id)
            .await?;
        let mut put = self
            .dynamo
            .put_item()
            .table_name(&self.table)
            .item(attr::MEMBER_ID, s(member_id))
            .item(attr::GEOLOCATION, s(tokens.geolocation.as_str()))
            .item(
                attr::REFRESH_TOKEN_CIPHERTEXT,
                AttributeValue::B(Blob::new(ciphertext)),
            )
            .item(attr::REQUEST_ID, s(request_id))
            .item(attr::CONNECTED_AT, s(timestamp(now)))
            .item(attr::REFRESHED_AT, s(timestamp(now)));
        if let Some(user_id) = &tokens.user_id {
            put = put.item(attr::CONCUR_USER_ID, s(user_id.clone()));
        }
        put.send().await.map_err(|e| sdk_error("PutItem", e))?;
        Ok(())
    }

    /// A member's stored connection (no secret in it).
    pub async fn get(&self, member_id: &str) -> Result<Option<StoredConnection>, VaultError> {
        let output = self
            .dynamo
            .get_item()
            .table_name(&self.table)
            .key(attr::MEMBER_ID, s(member_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        output.item.map(|item| parse(member_id, item)).transpose()
    }

    async fn take_lease(
        &self,
        member_id: &str,
        owner: &str,
    ) -> Result<StoredConnection, VaultError> {
        let now = Utc::now().timestamp_millis();
        let result = self
            .dynamo
            .update_item()
            .table_name(&self.table)
            .key(attr::MEMBER_ID, s(member_id))
            .update_expression("SET #owner = :owner, #until = :until")
            .condition_expression(
                "attribute_exists(#id) AND (attribute_not_exists(#until) OR #until < :now)",
            )
            .expression_attribute_names("#id", attr::MEMBER_ID)
            .expression_attribute_names("#owner", attr::LEASE_OWNER)
            .expression_attribute_names("#until", attr::LEASE_UNTIL)
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(
                ":until",
                AttributeValue::N((now + REFRESH_LEASE.as_millis() as i64).to_string()),
            )
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
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
            match self.take_lease(member_id, owner).await {
                Err(VaultError::Busy(_))
                    if Instant::now() + Duration::from_millis(100) < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    async fn release(
        &self,
        member_id: &str,
        owner: &str,
        rotated: Option<(&UserTokens, Vec<u8>)>,
    ) -> Result<(), VaultError> {
        let mut update = self
            .dynamo
            .update_item()
            .table_name(&self.table)
            .key(attr::MEMBER_ID, s(member_id))
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", attr::LEASE_OWNER)
            .expression_attribute_names("#until", attr::LEASE_UNTIL)
            .expression_attribute_values(":owner", s(owner));
        update = match rotated {
            Some((tokens, ciphertext)) => update
                .update_expression(
                    "SET #cipher = :cipher, #geo = :geo, #refreshed = :now REMOVE #owner, #until",
                )
                .expression_attribute_names("#cipher", attr::REFRESH_TOKEN_CIPHERTEXT)
                .expression_attribute_names("#geo", attr::GEOLOCATION)
                .expression_attribute_names("#refreshed", attr::REFRESHED_AT)
                .expression_attribute_values(":cipher", AttributeValue::B(Blob::new(ciphertext)))
                .expression_attribute_values(":geo", s(tokens.geolocation.as_str()))
                .expression_attribute_values(":now", s(timestamp(Utc::now()))),
            None => update.update_expression("REMOVE #owner, #until"),
        };
        match update.send().await {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(sdk_error("UpdateItem", e).into()),
        }
    }

    /// A fresh access token for a connected member: refresh at the user's geolocation,
    /// store the (possibly rotated) refresh token and geolocation back, under a lease.
    pub async fn access_token(
        &self,
        concur: &ConcurClient,
        member_id: &str,
        owner: &str,
        deadline: Instant,
    ) -> Result<UserTokens, VaultError> {
        let stored = self.lease(member_id, owner, deadline).await?;
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
            let tokens = concur
                .refresh_user_token(&geolocation, &refresh, deadline)
                .await?;
            let ciphertext = self
                .encryptor
                .encrypt(&tokens.refresh_token, member_id)
                .await?;
            Ok::<_, VaultError>((tokens, ciphertext))
        }
        .await;
        match refreshed {
            Ok((tokens, ciphertext)) => {
                self.release(member_id, owner, Some((&tokens, ciphertext)))
                    .await?;
                Ok(tokens)
            }
            Err(e) => {
                self.release(member_id, owner, None).await?;
                Err(e)
            }
        }
    }

    /// Revoke a member's connection at Concur and delete it here (a member unlinks).
    pub async fn revoke(
        &self,
        concur: &ConcurClient,
        member_id: &str,
        owner: &str,
        deadline: Instant,
    ) -> Result<(), VaultError> {
        let tokens = self
            .access_token(concur, member_id, owner, deadline)
            .await?;
        concur
            .revoke_connection(&tokens.geolocation, &tokens.access_token, deadline)
            .await?;
        self.dynamo
            .delete_item()
            .table_name(&self.table)
            .key(attr::MEMBER_ID, s(member_id))
            .send()
            .await
            .map_err(|e| sdk_error("DeleteItem", e))?;
        info!(member_id, "connection revoked");
        Ok(())
    }
}
