//! OAuth2 wire shapes of the auth page: token responses and error bodies.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use secrecy::SecretString;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::base_url::BaseUrl;

/// Access tokens live one hour (auth page): the lifetime assumed when `expires_in` is absent.
pub const DEFAULT_ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

fn opt_u64_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    // The page writes `"expires_in": "3600"` (a string); accept numbers as well.
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_u64().map(Some).ok_or_else(|| {
            serde::de::Error::custom(format!("expires_in {n} is not a whole number of seconds"))
        }),
        Value::String(s) => s.trim().parse::<u64>().map(Some).map_err(|_| {
            serde::de::Error::custom(format!("expires_in {s:?} is not a number of seconds"))
        }),
        other => Err(serde::de::Error::custom(format!(
            "expires_in: unexpected {other}"
        ))),
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
    #[serde(default, deserialize_with = "opt_u64_lenient")]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub geolocation: Option<String>,
    #[serde(default)]
    pub id_token: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

impl TokenResponse {
    pub fn lifetime(&self) -> Duration {
        self.expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_ACCESS_TOKEN_LIFETIME)
    }
}

/// A user's tokens after the password grant (`credtype=authtoken`) or a refresh.
/// The refresh token lives six months and may rotate on every refresh: always store the
/// newest one, with the geolocation, which later calls for this user must use.
#[derive(Debug, Clone)]
pub struct UserTokens {
    pub access_token: SecretString,
    pub refresh_token: SecretString,
    pub expires_in: Duration,
    pub geolocation: BaseUrl,
    /// The Concur user id: the id token's `sub`, else the id the grant was made for.
    pub user_id: Option<String>,
    pub scope: Option<String>,
}

/// An OAuth2 error body: `{"code", "error", "error_description", "geolocation"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
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

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error.as_deref().unwrap_or("error"))?;
        if let Some(code) = self.code {
            write!(f, " (code {code})")?;
        }
        if let Some(description) = &self.error_description {
            write!(f, ": {description}")?;
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
