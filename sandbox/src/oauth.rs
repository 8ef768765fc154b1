//! `POST /oauth2/v0/token` and `DELETE /app-mgmt/v0/connections`, from the OAuth2 page.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;
use uuid::Uuid;

use crate::api::{bearer, BearerError};
use crate::state::{mask, ExchangeError, Principal};
use crate::SharedState;

/// Scope string returned with every token.
pub const SCOPE: &str = "CONNECTIONREQUESTS";

/// An OAuth2 error: HTTP status and the page's `/token` code table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OAuthError {
    pub http: StatusCode,
    pub code: u32,
    pub error: &'static str,
    pub description: &'static str,
}

const fn e400(code: u32, error: &'static str, description: &'static str) -> OAuthError {
    OAuthError {
        http: StatusCode::BAD_REQUEST,
        code,
        error,
        description,
    }
}

/// `invalid_client` errors answer 401 (RFC 6749 §5.2); the others 400.
pub const CLIENT_NOT_FOUND: OAuthError = OAuthError {
    http: StatusCode::UNAUTHORIZED,
    code: 61,
    error: "invalid_client",
    description: "client not found",
};
pub const BAD_CLIENT_SECRET: OAuthError = OAuthError {
    http: StatusCode::UNAUTHORIZED,
    code: 64,
    error: "invalid_client",
    description: "Incorrect credentials. Please Retry",
};
pub const INCORRECT_CREDENTIALS: OAuthError =
    e400(5, "invalid_grant", "Incorrect credentials. Please Retry");
pub const USERNAME_MISSING: OAuthError = e400(51, "invalid_request", "username was not supplied");
pub const PASSWORD_MISSING: OAuthError = e400(52, "invalid_request", "password was not supplied");
pub const UNSUPPORTED_GRANT: OAuthError = e400(
    60,
    "invalid_grant",
    "these are not the grants you are looking for",
);
pub const CLIENT_ID_MISSING: OAuthError = e400(62, "invalid_request", "client_id was not supplied");
pub const CLIENT_SECRET_MISSING: OAuthError =
    e400(63, "invalid_request", "client_secret was not supplied");
pub const GRANT_TYPE_MISSING: OAuthError =
    e400(65, "invalid_request", "grant_type was not supplied");
pub const CODE_BAD_OR_EXPIRED: OAuthError = e400(103, "invalid_request", "code is bad or expired");
pub const REFRESH_MISSING: OAuthError =
    e400(106, "invalid_request", "refresh_token was not supplied");
pub const REFRESH_BAD: OAuthError = e400(108, "invalid_grant", "bad or expired refresh token");
pub const CREDTYPE_INVALID: OAuthError = e400(120, "invalid_request", "credtype is invalid");
pub const UNSUPPORTED_FORMAT: OAuthError =
    e400(135, "invalid_request", "unsupported request format");
pub const NOT_ISSUED_FOR_YOU: OAuthError =
    e400(136, "invalid_request", "Authtoken was not issued for you");
pub const USER_LIVES_ELSEWHERE: OAuthError = e400(16, "invalid_request", "user lives elsewhere");

/// The `elsewhere` fault: code 16, whose body's `geolocation` names where the user
/// lives (here: the sandbox's own geolocation, so a client that follows it comes back).
pub fn user_lives_elsewhere(state: &SharedState) -> Response {
    oauth_error(state, USER_LIVES_ELSEWHERE)
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn oauth_error(state: &SharedState, e: OAuthError) -> Response {
    json_response(
        e.http,
        json!({
            "code": e.code,
            "error": e.error,
            "error_description": e.description,
            "geolocation": state.settings.geolocation,
        }),
    )
}

/// An unsigned JWT-shaped OIDC token (`alg: none`, dummy signature) whose
/// payload carries `sub` = the Concur user id.
pub fn id_token(state: &SharedState, user_id: Uuid) -> String {
    let now = state.now().timestamp();
    let header = json!({"alg": "none", "typ": "JWT", "kid": "concur-sandbox"});
    let payload = json!({
        "aud": state.settings.client_id,
        "concur.profile": format!("{}/profile/v1/principals/{user_id}", state.settings.geolocation),
        "concur.version": 2,
        "concur.type": "user",
        "sub": user_id.to_string(),
        "iss": state.settings.geolocation,
        "exp": now + 3600,
        "nbf": now,
        "iat": now,
    });
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        URL_SAFE_NO_PAD.encode("concur-sandbox-unsigned"),
    )
}

fn user_tokens(state: &SharedState, user_id: Uuid) -> Response {
    let now = state.now();
    let (access, refresh, ttl, rttl) = {
        let mut w = state.world();
        let a = w.issue_access_token(Principal::User(user_id), now);
        let r = w.issue_refresh_token(user_id, now);
        (a, r, w.rules.access_token_ttl, w.rules.refresh_token_ttl)
    };
    json_response(
        StatusCode::OK,
        json!({
            "expires_in": ttl.to_string(),
            "scope": SCOPE,
            "token_type": "Bearer",
            "access_token": access,
            "refresh_token": refresh,
            "refresh_expires_in": now.timestamp() + rttl,
            "id_token": id_token(state, user_id),
            "geolocation": state.settings.geolocation,
        }),
    )
}

/// `POST /oauth2/v0/token` (form-encoded).
pub async fn token(State(state): State<SharedState>, headers: HeaderMap, body: Bytes) -> Response {
    match token_inner(&state, &headers, &body) {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(code = e.code, error = e.error, "token request refused");
            oauth_error(&state, e)
        }
    }
}

fn token_inner(
    state: &SharedState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, OAuthError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-www-form-urlencoded")
        .to_ascii_lowercase();
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return Err(UNSUPPORTED_FORMAT);
    }
    let form: Vec<(String, String)> =
        serde_urlencoded::from_bytes(body).map_err(|_| UNSUPPORTED_FORMAT)?;
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let grant = get("grant_type").ok_or(GRANT_TYPE_MISSING)?;
    let client_id = get("client_id").ok_or(CLIENT_ID_MISSING)?;
    let secret = get("client_secret").ok_or(CLIENT_SECRET_MISSING)?;
    if client_id != state.settings.client_id {
        return Err(CLIENT_NOT_FOUND);
    }
    if secret != state.settings.client_secret {
        return Err(BAD_CLIENT_SECRET);
    }
    let now = state.now();
    match grant {
        "client_credentials" => {
            let (access, ttl) = {
                let mut w = state.world();
                (
                    w.issue_access_token(Principal::App, now),
                    w.rules.access_token_ttl,
                )
            };
            Ok(json_response(
                StatusCode::OK,
                json!({
                    "expires_in": ttl.to_string(),
                    "scope": SCOPE,
                    "token_type": "Bearer",
                    "access_token": access,
                    "geolocation": state.settings.geolocation,
                }),
            ))
        }
        "password" => {
            let credtype = get("credtype").unwrap_or("password");
            let username = get("username").ok_or(USERNAME_MISSING)?;
            let password = get("password").ok_or(PASSWORD_MISSING)?;
            match credtype.to_ascii_lowercase().as_str() {
                "authtoken" => {
                    let r = state
                        .world()
                        .exchange_request_token(password, username, now);
                    match r {
                        Ok(user_id) => {
                            tracing::info!(request_token = %mask(password), "request token exchanged");
                            Ok(user_tokens(state, user_id))
                        }
                        Err(ExchangeError::BadOrExpired) => Err(CODE_BAD_OR_EXPIRED),
                        Err(ExchangeError::NotForYou) => Err(NOT_ISSUED_FOR_YOU),
                    }
                }
                // Sandbox users have no passwords.
                "password" => Err(INCORRECT_CREDENTIALS),
                _ => Err(CREDTYPE_INVALID),
            }
        }
        "refresh_token" => {
            let rt = get("refresh_token").ok_or(REFRESH_MISSING)?;
            let user = state.world().consume_refresh_token(rt, now);
            match user {
                Some(user_id) => Ok(user_tokens(state, user_id)),
                None => Err(REFRESH_BAD),
            }
        }
        _ => Err(UNSUPPORTED_GRANT),
    }
}

/// `DELETE /app-mgmt/v0/connections` with a user's access token: revokes all
/// of that user's refresh tokens → 200.
pub async fn revoke(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    match bearer(&state, &headers) {
        Ok(t) => match t.principal {
            Principal::User(user_id) => {
                let n = state.world().revoke_user(user_id);
                tracing::info!(revoked = n, "refresh tokens revoked");
                StatusCode::OK.into_response()
            }
            Principal::App => json_response(
                StatusCode::FORBIDDEN,
                json!({"error": "forbidden", "error_description": "a user access token is required"}),
            ),
        },
        Err(e) => {
            let d = match e {
                BearerError::Missing => "the Authorization header is not included in the request",
                BearerError::Invalid => "the bearer token is not valid",
                BearerError::Expired => "the bearer token has expired",
            };
            json_response(
                StatusCode::UNAUTHORIZED,
                json!({"error": "invalid_token", "error_description": d}),
            )
        }
    }
}
