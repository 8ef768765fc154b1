//! One typed error for each class of failure a Concur call can end in. Every error that
//! came with a response carries its HTTP status and `concur-correlationid`.

use std::fmt;
use std::time::Duration;

use super::auth::OAuthError;
use super::base_url::BaseUrlError;

/// How long Concur asks to be left alone after a 503 or a call that got no answer in
/// time (HTTP status codes page: "sleep for 5 minutes then retry", "wait for 5 minutes
/// then retry the request").
pub const CONCUR_PAUSE: Duration = Duration::from_secs(5 * 60);

/// What is known of the call that failed: safe to log (no personal data, no secrets).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallInfo {
    /// The client operation: `token`, `list`, `get`, `create`, `update_status`, ...
    pub op: &'static str,
    /// The HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// Concur's `concur-correlationid` response header, when present.
    pub correlation_id: Option<String>,
    /// Which send of the call this was (1 = the first; the client retries some failures).
    pub send: u32,
}

impl CallInfo {
    pub fn new(op: &'static str) -> Self {
        Self {
            op,
            ..Self::default()
        }
    }
}

impl fmt::Display for CallInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.op)?;
        if let Some(status) = self.status {
            write!(f, ", HTTP {status}")?;
        }
        if let Some(id) = &self.correlation_id {
            write!(f, ", correlation id {id}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConcurError {
    /// 401: no or bad credentials, even after one token refresh.
    #[error("Concur refused the credentials ({info})")]
    Unauthorized { info: CallInfo },
    /// 403: the token is valid but not allowed, expired or revoked, even after one refresh.
    #[error("Concur forbade the call ({info})")]
    Forbidden { info: CallInfo },
    /// 404: no such connection request (or path).
    #[error("not found at Concur ({info})")]
    NotFound { info: CallInfo },
    /// 400: the request was not accepted as sent.
    #[error("Concur rejected the request as bad ({info}){}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    BadRequest {
        info: CallInfo,
        message: Option<String>,
    },
    /// 429: slow down; `retry_after` is the server's `Retry-After`, when sent.
    #[error("Concur is rate limiting ({info}){}", retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited {
        info: CallInfo,
        retry_after: Option<Duration>,
    },
    /// 5xx: Concur is down or failing.
    #[error("Concur is unavailable ({info})")]
    Unavailable { info: CallInfo },
    /// Another status the API does not document for this call.
    #[error("unexpected answer from Concur ({info})")]
    UnexpectedStatus { info: CallInfo },
    /// No complete answer within the call's timeout. `cut_short`: the caller's deadline
    /// came before the call timeout did, so Concur was not given the time it promises.
    #[error("Concur did not answer in time ({info}){}", if *cut_short { ", cut short by the caller's deadline" } else { "" })]
    Timeout { info: CallInfo, cut_short: bool },
    /// The connection could not be made, or broke before the answer was complete.
    #[error("connection to Concur failed ({info}): {message}")]
    Connection { info: CallInfo, message: String },
    /// The answer arrived but is not what the API describes.
    #[error("malformed answer from Concur ({info}): {message}")]
    Malformed { info: CallInfo, message: String },
    /// A success status carrying an `Error` body (http-status-codes page).
    #[error("Concur answered with an error body ({info}){}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default(), error_id.as_deref().map(|i| format!(" [error id {i}]")).unwrap_or_default())]
    ErrorBody {
        info: CallInfo,
        message: Option<String>,
        error_id: Option<String>,
    },
    /// The OAuth2 token endpoint refused a grant (code table of the auth page).
    #[error("Concur OAuth2 refused the grant ({info}): {error}")]
    OAuth {
        info: CallInfo,
        error: Box<OAuthError>,
    },
    /// A base URL or geolocation the client must not call.
    #[error(transparent)]
    BaseUrl(#[from] BaseUrlError),
    /// The caller's deadline passed before the call could be made or retried.
    #[error("deadline reached before {op} could complete")]
    DeadlineExceeded { op: &'static str },
    /// The caller asked for something the API cannot do (checked before any call).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl ConcurError {
    /// Worth trying again: rate limiting, 5xx, timeouts and broken connections.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. }
                | Self::Unavailable { .. }
                | Self::Timeout { .. }
                | Self::Connection { .. }
        )
    }

    /// An authentication problem (401/403 after the one refresh, or an OAuth refusal).
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            Self::Unauthorized { .. } | Self::Forbidden { .. } | Self::OAuth { .. }
        )
    }

    /// The caller's deadline, not Concur, ended the call: says nothing about Concur.
    pub fn ended_by_deadline(&self) -> bool {
        matches!(
            self,
            Self::DeadlineExceeded { .. }
                | Self::Timeout {
                    cut_short: true,
                    ..
                }
        )
    }

    /// How long to leave the call alone before trying it again, when the HTTP status
    /// codes page asks for a pause: [`CONCUR_PAUSE`] after a 503 (down for maintenance)
    /// or a timeout (no answer in time). The client never retries these within a call;
    /// callers put the work aside for at least this long. `None` for everything else
    /// (other 5xx, 429 and broken connections are retried by the client with backoff),
    /// and for a timeout that the caller's deadline, not the call timeout, ended.
    pub fn pause(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { info } if info.status == Some(503) => Some(CONCUR_PAUSE),
            // A wait the caller's deadline cut short is the caller's, not Concur's.
            Self::Timeout { cut_short, .. } => (!cut_short).then_some(CONCUR_PAUSE),
            _ => None,
        }
    }

    /// The class of an OAuth2 refusal (`None` for every other error).
    pub fn oauth_kind(&self) -> Option<super::auth::OAuthErrorKind> {
        match self {
            Self::OAuth { error, .. } => Some(error.kind()),
            _ => None,
        }
    }

    /// The server's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// What is known of the failed call, for errors that came from one.
    pub fn info(&self) -> Option<&CallInfo> {
        match self {
            Self::Unauthorized { info }
            | Self::Forbidden { info }
            | Self::NotFound { info }
            | Self::BadRequest { info, .. }
            | Self::RateLimited { info, .. }
            | Self::Unavailable { info }
            | Self::UnexpectedStatus { info }
            | Self::Timeout { info, .. }
            | Self::Connection { info, .. }
            | Self::Malformed { info, .. }
            | Self::ErrorBody { info, .. }
            | Self::OAuth { info, .. } => Some(info),
            Self::BaseUrl(_) | Self::DeadlineExceeded { .. } | Self::Invalid(_) => None,
        }
    }

    /// Concur's correlation id for this failure, when the response had one.
    pub fn correlation_id(&self) -> Option<&str> {
        self.info().and_then(|i| i.correlation_id.as_deref())
    }

    /// A short stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unauthorized { .. } => "unauthorized",
            Self::Forbidden { .. } => "forbidden",
            Self::NotFound { .. } => "not_found",
            Self::BadRequest { .. } => "bad_request",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable { .. } => "unavailable",
            Self::UnexpectedStatus { .. } => "unexpected_status",
            Self::Timeout { .. } => "timeout",
            Self::Connection { .. } => "connection",
            Self::Malformed { .. } => "malformed",
            Self::ErrorBody { .. } => "error_body",
            Self::OAuth { .. } => "oauth",
            Self::BaseUrl(_) => "base_url",
            Self::DeadlineExceeded { .. } => "deadline",
            Self::Invalid(_) => "invalid",
        }
    }
}
