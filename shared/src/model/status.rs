//! Connection request status codes: the one place that knows them.
//!
//! Read case-insensitively (the v3.0 examples say `pending`), written exactly as the API
//! spells them. An unknown value is an [`UnknownStatus`] error, never a silent default.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Every status value the Connection Requests pages describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionStatus {
    /// `CRSUC`: connected; the user gets an e-mail.
    Connected,
    /// `CREU1`: loyalty account not found.
    AccountNotFound,
    /// `CREU2`: loyalty account does not match.
    AccountMismatch,
    /// `CREU3`: loyalty account needs attention.
    AccountNeedsAttention,
    /// `CRRET`: technical failure, retry; no e-mail, requeued after 1 h, at most 48 times.
    Retry,
    /// `CRPA1` (v3.0): the request token expired before it was exchanged.
    LegacyTokenExpired,
    /// `CRPA2` (v3.0): a Concur network error.
    LegacyNetworkError,
    /// `Pending`: what a GET returns; also a v3.0/v3.1 list filter.
    Pending,
    /// `Processing` (v3.0/v3.1 filter).
    Processing,
    /// `Connected` (v3.0/v3.1 filter).
    StateConnected,
    /// `Failed` (v3.0/v3.1 filter).
    StateFailed,
    /// `Retry` (v3.0/v3.1 filter).
    StateRetry,
}

/// A status value that none of the API pages describes.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown connection request status {} (expected one of CRSUC, CREU1, CREU2, CREU3, CRRET, CRPA1, CRPA2, Pending, Processing, Connected, Failed, Retry)", crate::privacy::code(.0))]
pub struct UnknownStatus(pub String);

/// Like `Display`: the value only when it looks like a status code.
impl fmt::Debug for UnknownStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("UnknownStatus")
            .field(&crate::privacy::code(&self.0))
            .finish()
    }
}

impl ConnectionStatus {
    /// All values, in the order of the reference pages.
    pub const ALL: [ConnectionStatus; 12] = [
        Self::Connected,
        Self::AccountNotFound,
        Self::AccountMismatch,
        Self::AccountNeedsAttention,
        Self::Retry,
        Self::LegacyTokenExpired,
        Self::LegacyNetworkError,
        Self::Pending,
        Self::Processing,
        Self::StateConnected,
        Self::StateFailed,
        Self::StateRetry,
    ];

    /// The value exactly as the API expects it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "CRSUC",
            Self::AccountNotFound => "CREU1",
            Self::AccountMismatch => "CREU2",
            Self::AccountNeedsAttention => "CREU3",
            Self::Retry => "CRRET",
            Self::LegacyTokenExpired => "CRPA1",
            Self::LegacyNetworkError => "CRPA2",
            Self::Pending => "Pending",
            Self::Processing => "Processing",
            Self::StateConnected => "Connected",
            Self::StateFailed => "Failed",
            Self::StateRetry => "Retry",
        }
    }

    /// A status a partner may PUT back (the five codes, plus the v3.0 `CRPA*`).
    pub fn is_reportable(self) -> bool {
        matches!(
            self,
            Self::Connected
                | Self::AccountNotFound
                | Self::AccountMismatch
                | Self::AccountNeedsAttention
                | Self::Retry
                | Self::LegacyTokenExpired
                | Self::LegacyNetworkError
        )
    }

    /// `CREU1`..`CREU3`: the user is e-mailed and Concur requeues after 24 h (4 times at most).
    pub fn is_user_error(self) -> bool {
        matches!(
            self,
            Self::AccountNotFound | Self::AccountMismatch | Self::AccountNeedsAttention
        )
    }
}

impl fmt::Display for ConnectionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConnectionStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Self::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

impl Serialize for ConnectionStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ConnectionStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips_exactly() {
        for status in ConnectionStatus::ALL {
            assert_eq!(status.as_str().parse::<ConnectionStatus>(), Ok(status));
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            assert_eq!(
                serde_json::from_str::<ConnectionStatus>(&json).unwrap(),
                status
            );
        }
    }

    #[test]
    fn reading_is_case_insensitive_and_trims() {
        assert_eq!("pending".parse(), Ok(ConnectionStatus::Pending));
        assert_eq!("PENDING".parse(), Ok(ConnectionStatus::Pending));
        assert_eq!(" crsuc ".parse(), Ok(ConnectionStatus::Connected));
        assert_eq!("creu2".parse(), Ok(ConnectionStatus::AccountMismatch));
        assert_eq!("retry".parse(), Ok(ConnectionStatus::StateRetry));
        assert_eq!("crret".parse(), Ok(ConnectionStatus::Retry));
    }

    /// A code is shown (it helps an operator); anything else, a name or an address sent
    /// where the status belongs, is withheld from Display, Debug and serde's message.
    #[test]
    fn unknown_values_that_are_not_codes_are_withheld() {
        for value in ["Maria Smith", "maria@example.com", "5314636889"] {
            let err = value.parse::<ConnectionStatus>().unwrap_err();
            let shown = format!("{err} / {err:?}");
            assert!(!shown.contains(value), "{shown}");
            assert!(shown.contains("characters withheld"), "{shown}");
            let serde = serde_json::from_str::<ConnectionStatus>(&format!("{value:?}"))
                .unwrap_err()
                .to_string();
            assert!(!serde.contains(value), "{serde}");
        }
        assert!(format!("{:?}", UnknownStatus("CREU4".into())).contains("CREU4"));
    }

    #[test]
    fn unknown_values_are_clear_errors() {
        let err = "CREU4".parse::<ConnectionStatus>().unwrap_err();
        assert_eq!(err, UnknownStatus("CREU4".into()));
        assert!(err.to_string().contains("CREU4"));
        assert!("".parse::<ConnectionStatus>().is_err());
        assert!(serde_json::from_str::<ConnectionStatus>("\"Done\"").is_err());
    }

    #[test]
    fn only_partner_codes_are_reportable() {
        let reportable: Vec<_> = ConnectionStatus::ALL
            .into_iter()
            .filter(|s| s.is_reportable())
            .map(ConnectionStatus::as_str)
            .collect();
        assert_eq!(
            reportable,
            ["CRSUC", "CREU1", "CREU2", "CREU3", "CRRET", "CRPA1", "CRPA2"]
        );
        assert!(ConnectionStatus::AccountNeedsAttention.is_user_error());
        assert!(!ConnectionStatus::Retry.is_user_error());
    }
}
