//! The member directory as an HTTP call to the supplier's own member service.
//!
//! ## Requests
//!
//! ```text
//! GET {base_url}/members?loyaltyNumber=<loyalty key>
//! GET {base_url}/members?email=<e-mail key>
//! Accept: application/json
//! <auth header name>: <secret value>        (when configured, e.g. Authorization or x-api-key)
//! ```
//!
//! `{base_url}` may carry a path prefix (`https://members.example.com/api/v1` →
//! `https://members.example.com/api/v1/members`). The loyalty number is sent as its
//! [`loyalty_key`] (trimmed, spaces and hyphens removed, upper-cased, leading zeros kept),
//! the e-mail address as its [`email_key`] (trimmed, lower-cased); both URL-encoded.
//! The service should return every member with that key; the connector applies the
//! matching rules (names, status, ambiguity) itself and ignores members that do not
//! carry the key.
//!
//! ## Responses
//!
//! * `200` with a JSON body `{"members": [<member>, ...]}` (an empty list when nobody
//!   has the key), each member in the format of the sandbox's `members.json`:
//!   ```json
//!   {"memberId": "M000001", "loyaltyNumber": "5314636889", "firstName": "Grace",
//!    "lastName": "Lindqvist", "emails": ["grace.lindqvist1@mail.example"],
//!    "status": "active"}
//!   ```
//!   `memberId`, `lastName` and `status` (`active` | `closed` | `locked` |
//!   `unverified`) are required; `loyaltyNumber` and `firstName` may be null or absent,
//!   `emails` may be absent; other fields are ignored.
//! * `404` with the JSON body `{"error": "member_not_found"}` → no member (same as an
//!   empty list). This is the only way a 404 means "not found": a 404 without that body
//!   (a wrong base URL, a gateway's error page) is an outage, never a `CREU1`.
//! * `429`, any `5xx`, a `404` without the body above, a timeout or a connection failure
//!   → [`DirectoryError::Unavailable`] (the request stays pending; no status is sent).
//! * Any other status (other `4xx`, redirects — they are not followed) or a body that is
//!   not the JSON above → [`DirectoryError::Malformed`] (also no status).
//!
//! ## Health
//!
//! ```text
//! GET {base_url}/health   →   200 {"status": "ok", "members": <count of members>}
//! ```
//!
//! The worker decides no `CREU*` unless this answers `ok` with a count above zero (see
//! [`super::health`]). A `404` means the service has no health answer (not ready);
//! anything else that is not the body above is an outage.
//!
//! The whole call (connect, send, read the body) is bounded by
//! [`HttpDirectoryConfig::timeout`]. Plain `http` is accepted only for loopback
//! addresses (local runs); every other base URL must use `https`. Error messages never
//! contain the URL (it carries the loyalty number or e-mail address).

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue, ACCEPT};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::{Host, Url};

use super::{without_values, DirectoryError, DirectoryHealth, MemberDirectory};
use crate::http::{read_body, BodyError};
use crate::matching::{email_key, loyalty_key, Member};

/// Where and how to call the supplier's member service.
#[derive(Clone)]
pub struct HttpDirectoryConfig {
    /// The service's base URL; `/members` is appended.
    pub base_url: Url,
    /// Bound on each whole call.
    pub timeout: Duration,
    /// A header sent with every call, such as `("Authorization", "Bearer …")`.
    pub auth_header: Option<(String, SecretString)>,
}

impl fmt::Debug for HttpDirectoryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpDirectoryConfig")
            .field("base_url", &self.base_url.as_str())
            .field("timeout", &self.timeout)
            .field(
                "auth_header",
                &self
                    .auth_header
                    .as_ref()
                    .map(|(name, _)| (name, "[REDACTED]")),
            )
            .finish()
    }
}

/// The supplier's member service over HTTP.
#[derive(Clone)]
pub struct HttpMemberDirectory {
    http: reqwest::Client,
    members_url: Url,
    auth: Option<(HeaderName, HeaderValue)>,
}

impl fmt::Debug for HttpMemberDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpMemberDirectory")
            .field("members_url", &self.members_url.as_str())
            .field(
                "auth_header",
                &self.auth.as_ref().map(|(name, _)| (name, "[REDACTED]")),
            )
            .finish()
    }
}

fn is_loopback(host: Option<Host<&str>>) -> bool {
    match host {
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

#[derive(Deserialize)]
struct MembersBody {
    members: Vec<Member>,
}

/// The explicit "no such member" answer of a 404.
#[derive(Deserialize)]
struct NotFoundBody {
    error: String,
}

const MEMBER_NOT_FOUND: &str = "member_not_found";

#[derive(Deserialize)]
struct HealthBody {
    status: String,
    members: u64,
}

/// The largest answer body read from the member service (a lookup answers the few
/// members holding one key; the health answer is a line).
pub const MAX_BODY: usize = 1024 * 1024;

/// A body that could not be read: too large is malformed (retrying will not shrink it),
/// a broken read is an outage.
fn body_error(what: &str, error: BodyError) -> DirectoryError {
    match error {
        BodyError::TooLarge { cap } => {
            DirectoryError::Malformed(format!("{what}: larger than {cap} bytes"))
        }
        BodyError::Transport(e) => {
            DirectoryError::Unavailable(format!("{what}: {}", e.without_url()))
        }
    }
}

fn config_error(message: String) -> DirectoryError {
    DirectoryError::Malformed(format!("configuration: {message}"))
}

impl HttpMemberDirectory {
    /// Check the configuration and build the client. Refused: a scheme other than https
    /// (or http to a loopback address), a base URL with a query, fragment or
    /// credentials, an invalid header name or value.
    pub fn new(config: HttpDirectoryConfig) -> Result<Self, DirectoryError> {
        let base = config.base_url;
        let shown = base.as_str().to_owned();
        match base.scheme() {
            "https" => {}
            "http" if is_loopback(base.host()) => {}
            _ => {
                return Err(config_error(format!(
                    "member service URL {shown:?} must use https \
                     (plain http is allowed for loopback addresses only)"
                )))
            }
        }
        if base.query().is_some()
            || base.fragment().is_some()
            || !base.username().is_empty()
            || base.password().is_some()
        {
            return Err(config_error(format!(
                "member service URL {shown:?} must not carry a query, fragment or credentials"
            )));
        }
        let mut members_url = base;
        members_url
            .path_segments_mut()
            .map_err(|()| config_error(format!("member service URL {shown:?} has no path")))?
            .pop_if_empty()
            .push("members");
        let auth = match config.auth_header {
            None => None,
            Some((name, value)) => {
                let name = HeaderName::try_from(name.trim())
                    .map_err(|e| config_error(format!("member service auth header name: {e}")))?;
                let mut value = HeaderValue::from_str(value.expose_secret()).map_err(|_| {
                    config_error(
                        "member service auth header value is not a valid header value".into(),
                    )
                })?;
                value.set_sensitive(true);
                Some((name, value))
            }
        };
        let http = crate::http::client_builder()
            .map_err(config_error)?
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| config_error(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            members_url,
            auth,
        })
    }

    /// A GET to the member service: JSON accepted, the auth header when configured.
    fn get(&self, url: Url) -> reqwest::RequestBuilder {
        let request = self
            .http
            .get(url)
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        match &self.auth {
            Some((name, value)) => request.header(name.clone(), value.clone()),
            None => request,
        }
    }

    /// The URL calls go to, without a query.
    pub fn members_url(&self) -> &Url {
        &self.members_url
    }

    async fn lookup(&self, parameter: &str, value: &str) -> Result<Vec<Member>, DirectoryError> {
        if value.is_empty() {
            return Ok(Vec::new());
        }
        let mut url = self.members_url.clone();
        url.query_pairs_mut().append_pair(parameter, value);
        let response = self.get(url).send().await.map_err(|e| {
            DirectoryError::Unavailable(format!(
                "member service ({parameter}): {}",
                e.without_url()
            ))
        })?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            // "Not found" only when the service says so; a bare 404 is an outage.
            let body = read_body(response, MAX_BODY).await.unwrap_or_default();
            return match serde_json::from_slice::<NotFoundBody>(&body) {
                Ok(b) if b.error == MEMBER_NOT_FOUND => Ok(Vec::new()),
                _ => Err(DirectoryError::Unavailable(format!(
                    "member service ({parameter}) answered HTTP 404 without \
                     {{\"error\": \"{MEMBER_NOT_FOUND}\"}} (wrong URL?)"
                ))),
            };
        }
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(DirectoryError::Unavailable(format!(
                "member service ({parameter}) answered HTTP {status}"
            )));
        }
        if status != StatusCode::OK {
            return Err(DirectoryError::Malformed(format!(
                "member service ({parameter}) answered HTTP {status}"
            )));
        }
        let body = read_body(response, MAX_BODY)
            .await
            .map_err(|e| body_error(&format!("member service ({parameter}) body"), e))?;
        serde_json::from_slice::<MembersBody>(&body)
            .map(|b| b.members)
            .map_err(|e| {
                DirectoryError::Malformed(format!(
                    "member service ({parameter}) body: {}",
                    without_values(&e.to_string())
                ))
            })
    }
}

impl HttpMemberDirectory {
    /// `GET {base}/health` (see the module documentation).
    async fn read_health(&self) -> Result<DirectoryHealth, DirectoryError> {
        let mut url = self.members_url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop().push("health");
        }
        let response = self.get(url).send().await.map_err(|e| {
            DirectoryError::Unavailable(format!("member service health: {}", e.without_url()))
        })?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(DirectoryHealth {
                members: None,
                updated_at: None,
            });
        }
        if status != StatusCode::OK {
            return Err(DirectoryError::Unavailable(format!(
                "member service health answered HTTP {status}"
            )));
        }
        let body = read_body(response, MAX_BODY)
            .await
            .map_err(|e| body_error("member service health body", e))?;
        let health: HealthBody = serde_json::from_slice(&body).map_err(|e| {
            DirectoryError::Malformed(format!(
                "member service health body: {}",
                without_values(&e.to_string())
            ))
        })?;
        if health.status != "ok" {
            return Err(DirectoryError::Unavailable(format!(
                "member service health status is not ok ({} characters)",
                health.status.len()
            )));
        }
        Ok(DirectoryHealth {
            members: Some(health.members),
            updated_at: None,
        })
    }
}

impl MemberDirectory for HttpMemberDirectory {
    async fn by_loyalty_number(&self, loyalty_number: &str) -> Result<Vec<Member>, DirectoryError> {
        self.lookup("loyaltyNumber", &loyalty_key(loyalty_number))
            .await
    }

    async fn by_email(&self, email: &str) -> Result<Vec<Member>, DirectoryError> {
        self.lookup("email", &email_key(email)).await
    }

    async fn health(&self) -> Result<DirectoryHealth, DirectoryError> {
        self.read_health().await
    }
}
