//! Status mapping: the one place that turns what the worker found into the status
//! Concur gets.
//!
//! | finding | status | reason |
//! | --- | --- | --- |
//! | matched, token exchanged, connection stored | `CRSUC` | `matched` |
//! | loyalty account (or e-mail) not found | `CREU1` | `not_found` |
//! | found, last name differs | `CREU2` | `name_mismatch` |
//! | found, account closed / locked / unverified / ambiguous | `CREU3` | `needs_attention:<why>` |
//! | request token exchange refused (an expired, used or foreign token), also after one re-read of the request | `CRRET` | `token_exchange_failed:<kind>` |
//! | an earlier holder submitted the token and Concur offers no other | `CRRET` | `token_spent` |
//! | no user id or no request token on the request | `CRRET` | `no_user_id` / `no_request_token` |
//!
//! `CREU*` e-mail the user and Concur requeues after 24 h (4 times at most); `CRRET`
//! sends no e-mail and Concur requeues after 1 h (48 times at most), with a new token.
//!
//! **No status at all** ([`Leave`]): when the failure is ours or a system's, not the
//! user's, nothing is sent and no attempt of the user's is spent. The request stays
//! pending at Concur; the worker releases its lease and the sweep re-arms the item after
//! a backoff (`triplink_shared::store::lifecycle`), up to its bound, then parks it with
//! an alarm.
//!
//! | finding | reason |
//! | --- | --- |
//! | member directory unavailable (after retries) | `directory_unavailable` |
//! | the exchange got no answer (timeout, broken connection, 5xx, deadline): the token may be spent | `token_exchange_unanswered` |
//! | the connection could not be stored (after retries) | `connection_store_failed` |
//! | a fresh request token could not be read from Concur | `fresh_token_unavailable` |
//! | the status could not be sent (after retries) | `report_failed` |
//! | the invocation's deadline came first | `deadline` |
//! | a `CREU*` was found but the directory is not known to be populated (`triplink_shared::members::health`) | `directory_not_ready` |
//! | the circuit breaker is open (`crate::breaker`) | `breaker_open` (until it closes, 5 min at least) |
//! | Concur refused the app's own credentials on the exchange (client rejected, `invalid_client`) | `app_credentials_rejected` (5 min at least) |
//!
//! A leave caused by a Concur answer that asks for a pause (a 503, or no answer within
//! the call timeout: [`ConcurError::pause`]) waits at least that long (five minutes)
//! before the request is tried again, whichever call it was (the app token, the
//! exchange, the fresh-token read or the PUT).

use triplink_shared::concur::auth::OAuthErrorKind;
use triplink_shared::concur::{ConcurError, CONCUR_PAUSE};
use triplink_shared::matching::{AttentionReason, MatchOutcome};

use crate::breaker::Cause;
use triplink_shared::model::ConnectionStatus;
use triplink_shared::store::Decision;

/// A technical failure before a status could be earned: always `CRRET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TechnicalFailure {
    TokenExchangeFailed(&'static str),
    TokenSpent,
    NoUserId,
    NoRequestToken,
}

/// Why a request is left pending with no status sent (see the module documentation).
/// `pause`: Concur's answer asked to be left alone ([`ConcurError::pause`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    DirectoryUnavailable,
    TokenExchangeUnanswered { pause: bool },
    ConnectionStoreFailed,
    FreshTokenUnavailable { pause: bool },
    ReportFailed { pause: bool },
    Deadline,
    DirectoryNotReady,
    BreakerOpen,
    AppCredentialsRejected,
}

impl Leave {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DirectoryUnavailable => "directory_unavailable",
            Self::TokenExchangeUnanswered { .. } => "token_exchange_unanswered",
            Self::ConnectionStoreFailed => "connection_store_failed",
            Self::FreshTokenUnavailable { .. } => "fresh_token_unavailable",
            Self::ReportFailed { .. } => "report_failed",
            Self::Deadline => "deadline",
            Self::DirectoryNotReady => "directory_not_ready",
            Self::BreakerOpen => "breaker_open",
            Self::AppCredentialsRejected => "app_credentials_rejected",
        }
    }

    /// `otherwise`, unless the invocation's deadline (not Concur) ended the call: then
    /// [`Leave::Deadline`], which says nothing about Concur (the circuit breaker ignores it).
    pub fn after(error: &ConcurError, otherwise: Leave) -> Leave {
        if error.ended_by_deadline() {
            Self::Deadline
        } else {
            otherwise
        }
    }

    /// The system-wide failure this reason is evidence of, for the circuit breaker;
    /// `None` for reasons that say nothing new about a system (a deadline, a gate).
    pub fn cause(self) -> Option<Cause> {
        match self {
            Self::DirectoryUnavailable => Some(Cause::Directory),
            Self::TokenExchangeUnanswered { .. } => Some(Cause::TokenEndpoint),
            Self::ConnectionStoreFailed => Some(Cause::Store),
            Self::FreshTokenUnavailable { .. } | Self::ReportFailed { .. } => Some(Cause::Concur),
            Self::AppCredentialsRejected => Some(Cause::AppCredentials),
            Self::Deadline | Self::DirectoryNotReady | Self::BreakerOpen => None,
        }
    }

    /// Did Concur ask for a pause?
    pub fn pause(self) -> bool {
        match self {
            Self::TokenExchangeUnanswered { pause }
            | Self::FreshTokenUnavailable { pause }
            | Self::ReportFailed { pause } => pause,
            _ => false,
        }
    }

    /// The shortest wait before the request is tried again: the HTTP status codes page
    /// asks for five minutes after a 503 or a call that got no answer in time; an open
    /// breaker or a refused app is not tried again before that either.
    pub fn at_least(self) -> chrono::Duration {
        let pause =
            chrono::Duration::from_std(CONCUR_PAUSE).unwrap_or(chrono::Duration::minutes(5));
        match self {
            Self::BreakerOpen => crate::breaker::COOL_DOWN,
            Self::AppCredentialsRejected => pause,
            _ if self.pause() => pause,
            _ => chrono::Duration::zero(),
        }
    }
}

/// The decision for a match outcome that needs no token exchange (`CREU*`), or `None`
/// for a match (which must first be connected).
pub fn for_outcome(outcome: &MatchOutcome) -> Option<Decision> {
    let (status, reason) = match outcome {
        // A match is connected first; a duplicate is parked by the worker (no status).
        MatchOutcome::Matched { .. } | MatchOutcome::DuplicateLoyaltyNumber { .. } => return None,
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

/// Did Concur refuse the app itself (not the traveller's token)? Then every request
/// would fail alike: the request is left pending (`app_credentials_rejected`), never
/// `CRRET`. Codes 53, 59, 61 (client unknown, disabled, company not enabled), an
/// `invalid_client` error, 62/63 (client id or secret not sent), or a 401 without a body.
pub fn is_app_problem(error: &ConcurError) -> bool {
    match error {
        ConcurError::OAuth { error, .. } => {
            error.kind() == OAuthErrorKind::ClientRejected
                || error.error.as_deref() == Some("invalid_client")
                || matches!(error.code, Some(62 | 63))
        }
        ConcurError::Unauthorized { .. } => true,
        _ => false,
    }
}

/// The decision recorded in dry-run mode for a match: what would be sent once the token
/// is exchanged (no token is exchanged in a dry run).
pub fn dry_run_match() -> Decision {
    Decision {
        status: ConnectionStatus::Connected,
        reason: "matched (dry run: token not exchanged)".into(),
    }
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
        TechnicalFailure::TokenExchangeFailed(kind) => format!("token_exchange_failed:{kind}"),
        TechnicalFailure::TokenSpent => "token_spent".to_owned(),
        TechnicalFailure::NoUserId => "no_user_id".to_owned(),
        TechnicalFailure::NoRequestToken => "no_request_token".to_owned(),
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
            TechnicalFailure::TokenExchangeFailed("oauth"),
            TechnicalFailure::TokenSpent,
            TechnicalFailure::NoUserId,
            TechnicalFailure::NoRequestToken,
        ] {
            assert_eq!(technical(failure).status, ConnectionStatus::Retry);
        }
        assert_eq!(
            technical(TechnicalFailure::TokenExchangeFailed("oauth")).reason,
            "token_exchange_failed:oauth"
        );
        assert_eq!(metric_name(ConnectionStatus::Retry), "Retried");
        for paused in [
            Leave::ReportFailed { pause: true },
            Leave::TokenExchangeUnanswered { pause: true },
            Leave::FreshTokenUnavailable { pause: true },
        ] {
            assert_eq!(
                paused.at_least(),
                chrono::Duration::minutes(5),
                "{paused:?}"
            );
        }
        for unpaused in [
            Leave::ReportFailed { pause: false },
            Leave::TokenExchangeUnanswered { pause: false },
            Leave::FreshTokenUnavailable { pause: false },
            Leave::DirectoryUnavailable,
            Leave::ConnectionStoreFailed,
            Leave::Deadline,
        ] {
            assert_eq!(
                unpaused.at_least(),
                chrono::Duration::zero(),
                "{unpaused:?}"
            );
        }
        assert_eq!(
            Leave::TokenExchangeUnanswered { pause: true }.as_str(),
            "token_exchange_unanswered"
        );
    }
}
