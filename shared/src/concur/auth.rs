//! OAuth2 wire shapes of the auth page: token responses and error bodies.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::base_url::BaseUrl;

/// Access tokens live one hour (auth page): the lifetime assumed when `expires_in` is absent.
pub const DEFAULT_ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// A number of seconds as the page writes it (`"expires_in": "3600"`, a string) or as a
/// number. Out-of-range values saturate (they are clamped later, never overflow); a value
/// that is not a number is an error.
fn opt_seconds_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    fn saturate(negative: bool) -> i64 {
        if negative {
            i64::MIN
        } else {
            i64::MAX
        }
    }
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(Some(match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i,
            (None, Some(_), _) => i64::MAX,
            // Fractions are truncated; a float beyond i64 saturates (`as` does).
            (None, None, Some(f)) => f as i64,
            (None, None, None) => saturate(false),
        })),
        Value::String(s) => {
            let t = s.trim();
            let digits = t.strip_prefix('-').unwrap_or(t);
            match t.parse::<i64>() {
                Ok(i) => Ok(Some(i)),
                Err(_) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                    Ok(Some(saturate(t.starts_with('-'))))
                }
                Err(_) => Err(serde::de::Error::custom(
                    "a lifetime is not a number of seconds",
                )),
            }
        }
        _ => Err(serde::de::Error::custom(
            "a lifetime is not a number of seconds",
        )),
    }
}

fn opt_code<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// A token endpoint success body, any grant.
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    pub access_token: String,
    #[serde(default, deserialize_with = "opt_seconds_lenient")]
    pub expires_in: Option<i64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// When the refresh token expires: epoch seconds, as the auth page says (a small value
    /// is read as seconds from now).
    #[serde(default, deserialize_with = "opt_seconds_lenient")]
    pub refresh_expires_in: Option<i64>,
    #[serde(default)]
    pub geolocation: Option<String>,
    #[serde(default)]
    pub id_token: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

/// Access token lifetimes outside this range are clamped into it (with a warning).
pub const ACCESS_TOKEN_LIFETIME_BOUNDS: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(24 * 3600));

/// Refresh tokens live six months (auth page): the lifetime assumed when the answer does
/// not say.
pub const DEFAULT_REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(183 * 24 * 3600);

/// A refresh token expiry is clamped to at least this far and at most
/// [`MAX_REFRESH_TOKEN_LIFETIME`] from now (with a warning).
pub const MIN_REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
pub const MAX_REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(400 * 24 * 3600);

/// `refresh_expires_in` values at or above this are epoch seconds (2001-09-09), below it
/// seconds from now.
const EPOCH_THRESHOLD: i64 = 1_000_000_000;

/// The longest access or refresh token accepted (a longer one is a malformed answer).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

impl TokenResponse {
    /// The access token's lifetime: `expires_in`, one hour when absent, clamped into
    /// [`ACCESS_TOKEN_LIFETIME_BOUNDS`] (0, negative or huge values never overflow).
    pub fn lifetime(&self) -> Duration {
        let Some(seconds) = self.expires_in else {
            return DEFAULT_ACCESS_TOKEN_LIFETIME;
        };
        let (min, max) = ACCESS_TOKEN_LIFETIME_BOUNDS;
        let clamped = seconds.clamp(min.as_secs() as i64, max.as_secs() as i64);
        if clamped != seconds {
            tracing::warn!(
                expires_in = seconds,
                clamped_to = clamped,
                "absurd access token lifetime clamped"
            );
        }
        Duration::from_secs(clamped.unsigned_abs())
    }

    /// When the refresh token expires: `refresh_expires_in` (epoch seconds, or seconds
    /// from now when small), six months from `now` when absent; clamped into
    /// [`MIN_REFRESH_TOKEN_LIFETIME`, `MAX_REFRESH_TOKEN_LIFETIME`] from `now`.
    pub fn refresh_expires_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        refresh_expiry(self.refresh_expires_in, now)
    }
}

/// See [`TokenResponse::refresh_expires_at`].
pub fn refresh_expiry(refresh_expires_in: Option<i64>, now: DateTime<Utc>) -> DateTime<Utc> {
    let seconds = |d: Duration| d.as_secs() as i64;
    let Some(value) = refresh_expires_in else {
        return now + chrono::Duration::seconds(seconds(DEFAULT_REFRESH_TOKEN_LIFETIME));
    };
    let from_now = if value >= EPOCH_THRESHOLD {
        value.saturating_sub(now.timestamp())
    } else {
        value
    };
    let (min, max) = (
        seconds(MIN_REFRESH_TOKEN_LIFETIME),
        seconds(MAX_REFRESH_TOKEN_LIFETIME),
    );
    let clamped = from_now.clamp(min, max);
    if clamped != from_now {
        tracing::warn!(
            refresh_expires_in = value,
            clamped_to_s = clamped,
            "absurd refresh token expiry clamped"
        );
    }
    now + chrono::Duration::seconds(clamped)
}

/// A user's tokens after the password grant (`credtype=authtoken`) or a refresh.
/// The refresh token lives six months and may rotate on every refresh: always store the
/// newest one, with the geolocation, which later calls for this user must use.
#[derive(Debug, Clone)]
pub struct UserTokens {
    pub access_token: SecretString,
    pub refresh_token: SecretString,
    pub expires_in: Duration,
    /// When the refresh token expires (see [`TokenResponse::refresh_expires_at`]).
    pub refresh_expires_at: DateTime<Utc>,
    pub geolocation: BaseUrl,
    /// The Concur user id: the id token's `sub`, else the id the grant was made for.
    pub user_id: Option<String>,
    pub scope: Option<String>,
}

/// An OAuth2 error body: `{"code", "error", "error_description", "geolocation"}`.
/// Its `Display` and `Debug` pass the server's description through
/// [`crate::privacy::free_text`].
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
pub struct OAuthError {
    #[serde(default, deserialize_with = "opt_code")]
    pub code: Option<i64>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub error_description: Option<String>,
    #[serde(default)]
    pub geolocation: Option<String>,
}

/// The classes of the auth page's `/token` code table that the connector acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthErrorKind {
    /// 5, 19, 64: incorrect credentials (for the app: wrong client id or secret).
    InvalidCredentials,
    /// 10, 11, 12, 13, 20, 123, 139: account disabled or logon denied.
    AccountDisabled,
    /// 14: account locked.
    AccountLocked,
    /// 16: the user lives in another geolocation (see the body's `geolocation`).
    UserLivesElsewhere,
    /// 103: the request token (auth code) is bad or expired.
    CodeBadOrExpired,
    /// 108: bad or expired refresh token: the connection must be made again.
    RefreshTokenInvalid,
    /// 136: the request token was not issued for this app.
    AuthTokenNotIssuedForYou,
    /// 53, 59, 61: the client is unknown, disabled or not enabled for the company.
    ClientRejected,
    /// 51, 52, 62, 63, 65, 106, 109, 120: a required parameter is missing or invalid.
    MissingParameter,
    /// Any other code, or none.
    Other,
}

impl OAuthError {
    pub fn kind(&self) -> OAuthErrorKind {
        use OAuthErrorKind::*;
        match self.code {
            Some(5 | 19 | 64) => InvalidCredentials,
            Some(10 | 11 | 12 | 13 | 20 | 123 | 139) => AccountDisabled,
            Some(14) => AccountLocked,
            Some(16) => UserLivesElsewhere,
            Some(103) => CodeBadOrExpired,
            Some(108) => RefreshTokenInvalid,
            Some(136) => AuthTokenNotIssuedForYou,
            Some(53 | 59 | 61) => ClientRejected,
            Some(51 | 52 | 62 | 63 | 65 | 106 | 109 | 120) => MissingParameter,
            _ => Other,
        }
    }
}

impl fmt::Debug for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthError")
            .field("code", &self.code)
            .field("error", &self.error.as_deref().map(crate::privacy::code))
            .field(
                "error_description",
                &self
                    .error_description
                    .as_deref()
                    .map(crate::privacy::free_text),
            )
            .field("geolocation", &self.geolocation)
            .finish()
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error.as_deref().unwrap_or("error"))?;
        if let Some(code) = self.code {
            write!(f, " (code {code})")?;
        }
        if let Some(description) = &self.error_description {
            write!(f, ": {}", crate::privacy::free_text(description))?;
        }
        Ok(())
    }
}

/// Read an OAuth error body; `None` when the body is not one.
pub(crate) fn parse_oauth_error(body: &str) -> Option<OAuthError> {
    let error: OAuthError = serde_json::from_str(body).ok()?;
    (error.code.is_some() || error.error.is_some()).then_some(error)
}

/// The `sub` claim of an id token (a JWT), read without verifying the signature: it only
/// names the user the grant was made for, it grants nothing.
pub fn id_token_subject(id_token: &str) -> Option<String> {
    let payload = id_token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims
        .get("sub")?
        .as_str()
        .map(str::to_owned)
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_in_as_string_or_number() {
        let as_text: TokenResponse =
            serde_json::from_str(r#"{"access_token":"a","expires_in":"3600"}"#).unwrap();
        assert_eq!(as_text.lifetime(), Duration::from_secs(3600));
        let as_number: TokenResponse =
            serde_json::from_str(r#"{"access_token":"a","expires_in":120}"#).unwrap();
        assert_eq!(as_number.lifetime(), Duration::from_secs(120));
        let absent: TokenResponse = serde_json::from_str(r#"{"access_token":"a"}"#).unwrap();
        assert_eq!(absent.lifetime(), DEFAULT_ACCESS_TOKEN_LIFETIME);
        assert!(serde_json::from_str::<TokenResponse>(
            r#"{"access_token":"a","expires_in":"soon"}"#
        )
        .is_err());
    }

    #[test]
    fn absurd_lifetimes_are_clamped_never_overflow() {
        let lifetime = |v: &str| {
            serde_json::from_str::<TokenResponse>(&format!(
                r#"{{"access_token":"a","expires_in":{v}}}"#
            ))
            .unwrap()
            .lifetime()
        };
        let (min, max) = ACCESS_TOKEN_LIFETIME_BOUNDS;
        for (v, want) in [
            ("0", min),
            ("-5", min),
            ("\"-99999999999999999999999\"", min),
            ("18446744073709551615", max),
            ("\"99999999999999999999999999\"", max),
            ("1e300", max),
            ("-1e300", min),
            ("\"1800\"", Duration::from_secs(1800)),
        ] {
            assert_eq!(lifetime(v), want, "expires_in {v}");
        }
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let expiry = |v: Option<i64>| (refresh_expiry(v, now) - now).num_seconds();
        let (lo, hi) = (
            MIN_REFRESH_TOKEN_LIFETIME.as_secs() as i64,
            MAX_REFRESH_TOKEN_LIFETIME.as_secs() as i64,
        );
        assert_eq!(
            expiry(None),
            DEFAULT_REFRESH_TOKEN_LIFETIME.as_secs() as i64
        );
        assert_eq!(expiry(Some(now.timestamp() + 86_400 * 30)), 86_400 * 30);
        assert_eq!(
            expiry(Some(86_400 * 30)),
            86_400 * 30,
            "small: seconds from now"
        );
        for v in [0, -1, i64::MIN, now.timestamp() - 10] {
            assert_eq!(expiry(Some(v)), lo, "{v}");
        }
        for v in [
            i64::MAX,
            EPOCH_THRESHOLD - 1,
            now.timestamp() + 10 * 365 * 86_400,
        ] {
            assert_eq!(expiry(Some(v)), hi, "{v}");
        }
    }

    #[test]
    fn oauth_codes_are_classified() {
        let kind = |code| {
            OAuthError {
                code: Some(code),
                ..Default::default()
            }
            .kind()
        };
        assert_eq!(kind(103), OAuthErrorKind::CodeBadOrExpired);
        assert_eq!(kind(108), OAuthErrorKind::RefreshTokenInvalid);
        assert_eq!(kind(136), OAuthErrorKind::AuthTokenNotIssuedForYou);
        assert_eq!(kind(5), OAuthErrorKind::InvalidCredentials);
        assert_eq!(kind(14), OAuthErrorKind::AccountLocked);
        assert_eq!(kind(16), OAuthErrorKind::UserLivesElsewhere);
        assert_eq!(kind(999), OAuthErrorKind::Other);
        assert!(parse_oauth_error(r#"{"access_token":"x"}"#).is_none());
        assert_eq!(
            parse_oauth_error(r#"{"code":"108","error":"invalid_grant"}"#)
                .unwrap()
                .code,
            Some(108)
        );
    }

    #[test]
    fn id_token_subject_is_read_from_the_payload() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"sub":"76459ad3-f77b-4d98-a21a-55333c9179f0","concur.type":"user"}"#);
        let token = format!("eyJhbGciOiJub25lIn0.{payload}.sig");
        assert_eq!(
            id_token_subject(&token).as_deref(),
            Some("76459ad3-f77b-4d98-a21a-55333c9179f0")
        );
        assert_eq!(id_token_subject("oidc_token"), None);
        assert_eq!(id_token_subject("a.!!!.c"), None);
    }
}
