//! The supplier's "unlink" hook: when a member disconnects TripLink on the supplier's
//! side (account page, support desk, account closure), the supplier's systems send one
//! EventBridge event to the account's default bus:
//!
//! ```json
//! {"Source": "triplink.supplier", "DetailType": "Member Unlinked",
//!  "Detail": "{\"member_id\": \"M-1001\"}"}
//! ```
//!
//! The template's rule (`UnlinkEventSource`, [`DETAIL_TYPE`]) delivers it to the worker,
//! which revokes the member's connection at Concur (`DELETE /app-mgmt/v0/connections` with
//! the user's access token, `TokenVault::revoke`) and deletes it from the vault.
//!
//! Twice, concurrently, or after dying half-way, an unlink ends the same:
//! * the vault entry is deleted only after Concur confirmed the revoke, so a failure
//!   keeps it and the event's retry (EventBridge, then Lambda's asynchronous retries,
//!   then the rule's dead-letter queue) revokes it again;
//! * a second delivery finds no connection: [`Unlinked::NotConnected`], a success;
//! * a revoke done at Concur whose vault delete was lost: the retry's refresh is refused
//!   (the token is revoked), so the entry is only deleted ([`Unlinked::DeletedHereOnly`]);
//! * two at once: the refresh lease lets one through; the other fails `Busy` and its
//!   retry finds nothing left.

use std::future::Future;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::{info, warn};
use triplink_shared::concur::ConcurClient;
use triplink_shared::privacy;
use triplink_shared::vault::{Encryptor, Revoked, TokenVault, VaultError};

/// The `detail-type` of an unlink event.
pub const DETAIL_TYPE: &str = "Member Unlinked";

/// The longest member id accepted (the supplier's own ids; the vault's key).
pub const MAX_MEMBER_ID_LEN: usize = 256;

/// The `detail` of an unlink event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnlinkDetail {
    pub member_id: String,
}

/// What an unlink did (the invocation's result, and the `result` of its log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unlinked {
    /// Revoked at Concur, then deleted from the vault.
    RevokedAtConcur,
    /// Concur already refused the refresh token (revoked or expired): deleted here.
    DeletedHereOnly,
    /// No connection for the member (never connected, or already unlinked).
    NotConnected,
}

impl Unlinked {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RevokedAtConcur => "revoked_at_concur",
            Self::DeletedHereOnly => "deleted_here_only",
            Self::NotConnected => "not_connected",
        }
    }
}

/// The invocation's answer to an unlink event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnlinkResult {
    pub member_id: String,
    pub result: Unlinked,
}

#[derive(Debug, thiserror::Error)]
pub enum UnlinkError {
    /// The event can never succeed: not retried usefully (fix the sender).
    #[error("invalid unlink event: {0}")]
    Invalid(String),
    /// Concur or the vault failed; the event's retry revokes it again.
    #[error("member {member_id}: the connection was not revoked yet: {source}")]
    NotRevoked {
        member_id: String,
        #[source]
        source: VaultError,
    },
}

/// Revokes one member's connection. The deployed one is [`VaultRevoker`].
pub trait Revoker: Send + Sync {
    fn revoke(
        &self,
        member_id: &str,
        owner: &str,
        deadline: Instant,
    ) -> impl Future<Output = Result<Revoked, VaultError>> + Send;
}

/// The token vault and the Concur client together.
pub struct VaultRevoker<'a, E> {
    pub vault: &'a TokenVault<E>,
    pub concur: &'a ConcurClient,
}

impl<E: Encryptor> Revoker for VaultRevoker<'_, E> {
    async fn revoke(
        &self,
        member_id: &str,
        owner: &str,
        deadline: Instant,
    ) -> Result<Revoked, VaultError> {
        self.vault
            .revoke(self.concur, member_id, owner, deadline)
            .await
    }
}

impl UnlinkDetail {
    /// Read and check an event's `detail`.
    pub fn parse(detail: serde_json::Value) -> Result<Self, UnlinkError> {
        let detail: Self = serde_json::from_value(detail).map_err(|e| {
            UnlinkError::Invalid(format!(
                "detail must be {{\"member_id\": \"...\"}} ({})",
                privacy::json_error(&e)
            ))
        })?;
        let id = detail.member_id.as_str();
        if id.trim().is_empty() {
            return Err(UnlinkError::Invalid("member_id is empty".into()));
        }
        if id.len() > MAX_MEMBER_ID_LEN {
            return Err(UnlinkError::Invalid(format!(
                "member_id is longer than {MAX_MEMBER_ID_LEN} bytes"
            )));
        }
        if id.chars().any(char::is_control) {
            return Err(UnlinkError::Invalid(
                "member_id contains control characters".into(),
            ));
        }
        Ok(detail)
    }
}

/// Unlink one member: revoke at Concur, then delete from the vault.
pub async fn unlink(
    revoker: &impl Revoker,
    detail: &UnlinkDetail,
    owner: &str,
    deadline: Instant,
) -> Result<UnlinkResult, UnlinkError> {
    let member_id = detail.member_id.clone();
    let result = match revoker.revoke(&member_id, owner, deadline).await {
        Ok(Revoked::AtConcurAndHere) => Unlinked::RevokedAtConcur,
        Ok(Revoked::HereOnly) => Unlinked::DeletedHereOnly,
        Err(VaultError::NotConnected(_)) => Unlinked::NotConnected,
        Err(source) => {
            warn!(
                member_id,
                error = %source,
                transient = source.is_transient(),
                "unlink: the connection was not revoked; the event will be retried"
            );
            return Err(UnlinkError::NotRevoked { member_id, source });
        }
    };
    info!(member_id, result = result.as_str(), "unlink done");
    Ok(UnlinkResult { member_id, result })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Mutex;

    struct Scripted(Mutex<Vec<Result<Revoked, VaultError>>>);

    impl Revoker for Scripted {
        async fn revoke(&self, _: &str, _: &str, _: Instant) -> Result<Revoked, VaultError> {
            self.0.lock().unwrap().remove(0)
        }
    }

    fn detail(id: &str) -> UnlinkDetail {
        UnlinkDetail {
            member_id: id.into(),
        }
    }

    #[tokio::test]
    async fn each_vault_answer_has_one_result() {
        let revoker = Scripted(Mutex::new(vec![
            Ok(Revoked::AtConcurAndHere),
            Ok(Revoked::HereOnly),
            Err(VaultError::NotConnected("M-1".into())),
            Err(VaultError::Busy("M-1".into())),
            Err(VaultError::Expired("M-1".into())),
        ]));
        let at = Instant::now();
        let mut results = Vec::new();
        for _ in 0..5 {
            results.push(
                unlink(&revoker, &detail("M-1"), "owner", at)
                    .await
                    .map(|r| r.result)
                    .map_err(|e| e.to_string()),
            );
        }
        assert_eq!(results[0], Ok(Unlinked::RevokedAtConcur));
        assert_eq!(results[1], Ok(Unlinked::DeletedHereOnly));
        assert_eq!(results[2], Ok(Unlinked::NotConnected));
        // A refresh under way elsewhere, or any other failure: an error, so it is retried.
        assert!(results[3].as_ref().unwrap_err().contains("not revoked yet"));
        assert!(results[4].is_err());
    }

    #[test]
    fn bad_details_are_refused_with_a_clear_reason_and_without_their_values() {
        let cases = [
            (json!({}), "missing field"),
            (
                json!({"member_id": "M-1", "email": "maria@example.com"}),
                "unknown field",
            ),
            (json!({"member_id": 998877123}), "invalid type"),
            (json!("maria@example.com"), "invalid type"),
            (json!({"member_id": "  "}), "empty"),
            (json!({"member_id": "a\u{0}b"}), "control"),
            (
                json!({"member_id": "x".repeat(MAX_MEMBER_ID_LEN + 1)}),
                "longer",
            ),
        ];
        for (value, reason) in cases {
            let err = UnlinkDetail::parse(value.clone()).unwrap_err().to_string();
            assert!(err.contains(reason), "{value}: {err}");
            for secret in ["maria@example.com", "998877123"] {
                assert!(!err.contains(secret), "{err}");
            }
        }
        assert_eq!(
            UnlinkDetail::parse(json!({"member_id": "M-1"})).unwrap(),
            detail("M-1")
        );
    }
}
