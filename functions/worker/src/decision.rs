//! Status mapping: the one place that turns what the worker found into the status
//! Concur gets.
//!
//! | finding | status | reason |
//! | --- | --- | --- |
//! | matched, token exchanged, connection stored | `CRSUC` | `matched` |
//! | loyalty account (or e-mail) not found | `CREU1` | `not_found` |
//! | found, last name differs | `CREU2` | `name_mismatch` |
//! | found, account closed / locked / unverified / ambiguous | `CREU3` | `needs_attention:<why>` |
//! | member directory unavailable (after retries) | `CRRET` | `directory_unavailable` |
//! | request token exchange failed (after retries; incl. an expired or used token) | `CRRET` | `token_exchange_failed:<kind>` |
//! | no user id or no request token on the request | `CRRET` | `no_user_id` / `no_request_token` |
//! | the connection could not be stored (after retries) | `CRRET` | `connection_store_failed` |
//!
//! `CREU*` e-mail the user and Concur requeues after 24 h (4 times at most); `CRRET`
//! sends no e-mail and Concur requeues after 1 h (48 times at most), with a new token.

use triplink_shared::matching::{AttentionReason, MatchOutcome};
use triplink_shared::model::ConnectionStatus;
use triplink_shared::store::Decision;

/// A technical failure before a status could be earned: always `CRRET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TechnicalFailure {
    DirectoryUnavailable,
    TokenExchangeFailed(&'static str),
    NoUserId,
    NoRequestToken,
    ConnectionStoreFailed,
}

/// The decision for a match outcome that needs no token exchange (`CREU*`), or `None`
/// for a match (which must first be connected).
pub fn for_outcome(outcome: &MatchOutcome) -> Option<Decision> {
    let (status, reason) = match outcome {
        MatchOutcome::Matched { .. } => return None,
        MatchOutcome::NotFound => (ConnectionStatus::AccountNotFound, "not_found".to_owned()),
        MatchOutcome::NameMismatch => (
            ConnectionStatus::AccountMismatch,
            "name_mismatch".to_owned(),
        ),
        MatchOutcome::NeedsAttention { reason, .. } => {
            let why = match reason {
                AttentionReason::Closed => "closed",
                AttentionReason::Locked => "locked",
                AttentionReason::Unverified => "unverified",
                AttentionReason::Ambiguous => "ambiguous",
            };
            (
                ConnectionStatus::AccountNeedsAttention,
                format!("needs_attention:{why}"),
            )
        }
    };
    Some(Decision { status, reason })
}

/// A matched member whose connection is stored.
pub fn connected() -> Decision {
    Decision {
        status: ConnectionStatus::Connected,
        reason: "matched".into(),
    }
}

/// A technical failure: retry in an hour.
pub fn technical(failure: TechnicalFailure) -> Decision {
    let reason = match failure {
        TechnicalFailure::DirectoryUnavailable => "directory_unavailable".to_owned(),
        TechnicalFailure::TokenExchangeFailed(kind) => format!("token_exchange_failed:{kind}"),
        TechnicalFailure::NoUserId => "no_user_id".to_owned(),
        TechnicalFailure::NoRequestToken => "no_request_token".to_owned(),
        TechnicalFailure::ConnectionStoreFailed => "connection_store_failed".to_owned(),
    };
    Decision {
        status: ConnectionStatus::Retry,
        reason,
    }
}

/// The metric name of a reported status.
pub fn metric_name(status: ConnectionStatus) -> &'static str {
    match status {
        ConnectionStatus::Connected => "Connected",
        ConnectionStatus::AccountNotFound => "CREU1",
        ConnectionStatus::AccountMismatch => "CREU2",
        ConnectionStatus::AccountNeedsAttention => "CREU3",
        _ => "Retried",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_finding_has_its_status() {
        let cases = [
            (MatchOutcome::NotFound, "CREU1", "not_found"),
            (MatchOutcome::NameMismatch, "CREU2", "name_mismatch"),
            (
                MatchOutcome::NeedsAttention {
                    member_id: Some("m".into()),
                    reason: AttentionReason::Locked,
                },
                "CREU3",
                "needs_attention:locked",
            ),
            (
                MatchOutcome::NeedsAttention {
                    member_id: None,
                    reason: AttentionReason::Ambiguous,
                },
                "CREU3",
                "needs_attention:ambiguous",
            ),
        ];
        for (outcome, status, reason) in cases {
            let decision = for_outcome(&outcome).unwrap();
            assert_eq!(
                (decision.status.as_str(), decision.reason.as_str()),
                (status, reason)
            );
        }
        assert!(for_outcome(&MatchOutcome::Matched {
            member_id: "m".into()
        })
        .is_none());
        assert_eq!(connected().status, ConnectionStatus::Connected);
        for failure in [
            TechnicalFailure::DirectoryUnavailable,
            TechnicalFailure::TokenExchangeFailed("oauth"),
            TechnicalFailure::NoUserId,
            TechnicalFailure::NoRequestToken,
            TechnicalFailure::ConnectionStoreFailed,
        ] {
            assert_eq!(technical(failure).status, ConnectionStatus::Retry);
        }
        assert_eq!(
            technical(TechnicalFailure::TokenExchangeFailed("oauth")).reason,
            "token_exchange_failed:oauth"
        );
        assert_eq!(metric_name(ConnectionStatus::Retry), "Retried");
    }
}
