//! The Concur API client: app token, connection requests, user token grants.
//!
//! Every call has a timeout (`call_timeout`, 60 s by default as the HTTP status codes page
//! promises an answer within 60 seconds, shortened to what is left before the caller's
//! deadline). A 503 or a timeout is never retried within the call: the page asks for a
//! five-minute pause ([`ConcurError::pause`]), which only the caller can take. Other
//! transient failures (429, 500, 502, 504, broken connections) are retried by
//! [`RetryPolicy`]; a 401/403 on an API call refreshes the app token once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use url::Url;

use super::auth::{
    id_token_subject, parse_oauth_error, OAuthErrorKind, TokenResponse, UserTokens, MAX_TOKEN_LEN,
};
use super::base_url::BaseUrl;
use super::error::{CallInfo, ConcurError};
use super::retry::{parse_retry_after, Decision, RetryPolicy};
use super::version::ApiVersion;
use crate::model::{
    json, xml, ConnectionRequest, ConnectionRequestPage, ConnectionStatus, ModelError,
    WireCollection, WireConnectionRequest,
};
use crate::privacy;

/// The largest page the API serves.
pub const MAX_PAGE_LIMIT: u32 = 10;

/// The HTTP status codes page: "The web service should return a response within 60
/// seconds."
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest answer body read from the token endpoint (a token answer is a few KiB).
pub const MAX_TOKEN_BODY: usize = 64 * 1024;

/// The largest answer body read from an API call (a page holds at most ten requests).
pub const MAX_API_BODY: usize = 4 * 1024 * 1024;

/// Everything the client needs to know.
#[derive(Debug, Clone)]
pub struct ConcurConfig {
    /// Where connection requests live (the app's geolocation).
    pub api_base: BaseUrl,
    /// Where the client-credentials grant goes ("any production base URI").
    pub token_base: BaseUrl,
    /// Where the password grant with `credtype=authtoken` goes: the GLZ base URI.
    pub authtoken_base: BaseUrl,
    pub client_id: String,
    pub client_secret: SecretString,
    pub version: ApiVersion,
    /// The longest any one HTTP exchange may take (connect to last body byte).
    pub call_timeout: Duration,
    pub connect_timeout: Duration,
    pub retry: RetryPolicy,
    /// Refresh the app token this long before it expires (at most half its lifetime).
    pub token_refresh_margin: Duration,
}

impl ConcurConfig {
    /// Defaults for everything but the base URL and credentials. Against loopback (a
    /// local sandbox) every grant goes to that same base; otherwise the authtoken
    /// grant goes to GLZ, as the auth page says.
    pub fn new(
        api_base: BaseUrl,
        client_id: impl Into<String>,
        client_secret: SecretString,
    ) -> Self {
        // GLZ_BASE_URL is a constant the tests parse; the fallback is never taken.
        let authtoken_base = if api_base.is_loopback() {
            api_base.clone()
        } else {
            BaseUrl::glz().unwrap_or_else(|_| api_base.clone())
        };
        Self {
            token_base: api_base.clone(),
            authtoken_base,
            api_base,
            client_id: client_id.into(),
            client_secret,
            version: ApiVersion::V3_2,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            connect_timeout: Duration::from_secs(3),
            retry: RetryPolicy::default(),
            token_refresh_margin: Duration::from_secs(300),
        }
    }
}

/// One page of pending connection requests.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<ConnectionRequest>,
    /// Items that could not be read as requests (see [`ConnectionRequestPage::from_wire`]).
    pub quarantined: Vec<crate::model::Quarantined>,
    /// Items read with an unknown `status` or unreadable `lastModified` ignored.
    pub degraded: Vec<crate::model::Degraded>,
    /// The offset to ask for next (taken from `NextPage`); `None` when the queue is drained.
    pub next_offset: Option<String>,
    pub correlation_id: Option<String>,
    /// `NextPage` named another host than the one called: only its offset is used. Left
    /// to the caller to log (once per run, not once per page).
    pub foreign_next_page: Option<ForeignNextPage>,
}

/// The hosts of a `NextPage` that names another host than the one called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignNextPage {
    /// The host `NextPage` names (never called).
    pub next_page_host: String,
    /// The host the page was read from (where the next page is asked for).
    pub api_host: String,
}

#[derive(Clone)]
struct CachedToken {
    token: SecretString,
    /// The token's geolocation: where calls made with it go (`None`: the configured
    /// `api_base`, when the grant's answer named none).
    geolocation: Option<BaseUrl>,
    refresh_at: Instant,
}

/// The app token and the base URI its calls go to.
#[derive(Clone)]
struct AppSession {
    token: SecretString,
    base: BaseUrl,
}

enum Body {
    Empty,
    Form(String),
    Typed(&'static str, String),
}

struct Call {
    op: &'static str,
    method: Method,
    url: Url,
    body: Body,
    /// Safe to send twice (a retry after a timeout may repeat a call that did happen).
    idempotent: bool,
}

struct Response {
    /// The URL that was called (after the app token's geolocation was applied).
    url: Url,
    status: StatusCode,
    headers: HeaderMap,
    body: String,
    info: CallInfo,
}

impl Response {
    fn is_xml(&self) -> bool {
        let declared = self
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.to_ascii_lowercase().contains("xml"));
        declared || self.body.trim_start().starts_with('<')
    }

    fn malformed(&self, error: impl ToString) -> ConcurError {
        ConcurError::Malformed {
            info: self.info.clone(),
            message: error.to_string(),
        }
    }

    /// A success status carrying an `Error` body is an error (http-status-codes page).
    fn reject_error_body(self) -> Result<Self, ConcurError> {
        let error = if self.is_xml() {
            xml::parse_error_body(&self.body)
        } else {
            json::parse_error_body(&self.body)
        };
        match error {
            Some(error) => Err(ConcurError::ErrorBody {
                info: self.info,
                message: error.message.as_deref().map(privacy::free_text),
                error_id: error.id,
            }),
            None => Ok(self),
        }
    }
}

fn correlation_id(headers: &HeaderMap) -> Option<String> {
    ["concur-correlationid", "correlationid"]
        .iter()
        .find_map(|name| headers.get(*name))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Map a non-success status of an API call to its error class.
fn api_status_error(response: Response) -> ConcurError {
    let info = response.info.clone();
    match response.status {
        StatusCode::UNAUTHORIZED => ConcurError::Unauthorized { info },
        StatusCode::FORBIDDEN => ConcurError::Forbidden { info },
        StatusCode::NOT_FOUND => ConcurError::NotFound { info },
        StatusCode::BAD_REQUEST => {
            let message = json::parse_error_body(&response.body)
                .or_else(|| xml::parse_error_body(&response.body))
                .and_then(|e| e.message)
                .as_deref()
                .map(privacy::free_text);
            ConcurError::BadRequest { info, message }
        }
        StatusCode::TOO_MANY_REQUESTS => ConcurError::RateLimited {
            retry_after: response
                .headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now())),
            info,
        },
        status if status.is_server_error() => ConcurError::Unavailable { info },
        _ => ConcurError::UnexpectedStatus { info },
    }
}

/// Map a non-success status of the token endpoint: an OAuth error body wins.
fn token_status_error(response: Response) -> ConcurError {
    if response.status.is_client_error() && response.status != StatusCode::TOO_MANY_REQUESTS {
        if let Some(error) = parse_oauth_error(&response.body) {
            return ConcurError::OAuth {
                info: response.info,
                error: Box::new(error),
            };
        }
    }
    api_status_error(response)
}

/// A transport failure's message with its causes, never its URL (the query of a create
/// call names the user's login).
fn transport_message(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&privacy::without_values(&cause.to_string()));
        source = cause.source();
    }
    message
}

fn deadline_left(deadline: Instant, op: &'static str) -> Result<Duration, ConcurError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(ConcurError::DeadlineExceeded { op })
    } else {
        Ok(left)
    }
}

/// The Concur API client. Cheap to share (`Arc`); the app token is cached inside and
/// survives across warm Lambda invocations when the client does.
pub struct ConcurClient {
    http: reqwest::Client,
    config: ConcurConfig,
    app_token: Mutex<Option<CachedToken>>,
    /// The client id and secret in use: the configured ones until a re-fetch.
    credentials: std::sync::RwLock<Credentials>,
    secret_provider: Option<Arc<dyn SecretProvider>>,
    refetch: Mutex<()>,
}

/// A future of [`SecretProvider::fetch`].
pub type SecretFuture<'a> =
    Pin<Box<dyn Future<Output = Result<(String, SecretString), String>> + Send + 'a>>;

/// Where the app's client credentials can be fetched again: the client secret is read
/// once per execution environment, and once more when Concur answers `invalid_client`
/// (the supplier rotated it).
pub trait SecretProvider: Send + Sync {
    /// The current client id and secret (an error message without the secret).
    fn fetch(&self) -> SecretFuture<'_>;
}

#[derive(Clone)]
struct Credentials {
    client_id: String,
    client_secret: SecretString,
}

impl Credentials {
    fn same_as(&self, other: &Self) -> bool {
        self.client_id == other.client_id
            && self.client_secret.expose_secret() == other.client_secret.expose_secret()
    }
}

impl ConcurClient {
    pub fn new(config: ConcurConfig) -> Result<Self, ConcurError> {
        let http = crate::http::client_builder()
            .map_err(ConcurError::Invalid)?
            .connect_timeout(config.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ConcurError::Invalid(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            credentials: std::sync::RwLock::new(Credentials {
                client_id: config.client_id.clone(),
                client_secret: config.client_secret.clone(),
            }),
            config,
            app_token: Mutex::new(None),
            secret_provider: None,
            refetch: Mutex::new(()),
        })
    }

    /// Re-fetch the client secret from `provider` when Concur answers `invalid_client`.
    pub fn with_secret_provider(mut self, provider: Arc<dyn SecretProvider>) -> Self {
        self.secret_provider = Some(provider);
        self
    }

    pub fn config(&self) -> &ConcurConfig {
        &self.config
    }

    // ----- transport -------------------------------------------------------------

    async fn send_once(
        &self,
        call: &Call,
        token: Option<&SecretString>,
        deadline: Instant,
        send: u32,
    ) -> Result<Response, ConcurError> {
        let left = deadline_left(deadline, call.op)?;
        let cut_short = left < self.config.call_timeout;
        let mut request = self
            .http
            .request(call.method.clone(), call.url.clone())
            .timeout(self.config.call_timeout.min(left))
            .header(ACCEPT, "application/json");
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {}", token.expose_secret()));
        }
        request = match &call.body {
            Body::Empty => request.header(CONTENT_LENGTH, "0"),
            Body::Form(form) => request
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form.clone()),
            Body::Typed(content_type, body) => request
                .header(CONTENT_TYPE, *content_type)
                .body(body.clone()),
        };
        let started = Instant::now();
        let mut info = CallInfo::new(call.op);
        info.send = send;
        let transport = |info: &CallInfo, e: reqwest::Error| {
            if e.is_timeout() {
                ConcurError::Timeout {
                    info: info.clone(),
                    cut_short,
                }
            } else {
                // Without the URL: a create call's query names the user's login.
                ConcurError::Connection {
                    info: info.clone(),
                    message: transport_message(e),
                }
            }
        };
        let response = request.send().await.map_err(|e| transport(&info, e))?;
        let status = response.status();
        let headers = response.headers().clone();
        info.status = Some(status.as_u16());
        info.correlation_id = correlation_id(&headers);
        let max_body = if call.op == "token" {
            MAX_TOKEN_BODY
        } else {
            MAX_API_BODY
        };
        let bytes = match crate::http::read_body(response, max_body).await {
            Ok(bytes) => bytes,
            Err(crate::http::BodyError::Transport(e)) => return Err(transport(&info, e)),
            Err(crate::http::BodyError::TooLarge { cap }) => {
                return Err(ConcurError::Malformed {
                    info,
                    message: format!("answer body larger than {cap} bytes"),
                })
            }
        };
        let body = String::from_utf8_lossy(&bytes).into_owned();
        // At info: the one line that ties a call to Concur's correlation id (a request's
        // lines carry its request_id through the caller's span).
        info!(
            op = call.op,
            status = status.as_u16(),
            correlation_id = info.correlation_id.as_deref().unwrap_or(""),
            attempt = send,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "concur call"
        );
        Ok(Response {
            url: call.url.clone(),
            status,
            headers,
            body,
            info,
        })
    }

    /// Send with retries of transient failures; `to_error` classifies non-2xx answers.
    async fn send(
        &self,
        call: &Call,
        token: Option<&SecretString>,
        deadline: Instant,
        to_error: fn(Response) -> ConcurError,
    ) -> Result<Response, ConcurError> {
        let mut attempt = 1;
        loop {
            let error = match self.send_once(call, token, deadline, attempt).await {
                Ok(response) if response.status.is_success() => return Ok(response),
                Ok(response) => to_error(response),
                Err(e) => e,
            };
            // A call that may not be repeated is retried only on answers that prove it
            // did not happen (429, 5xx); a timeout or broken connection leaves it unknown.
            let repeatable = call.idempotent
                || matches!(
                    error,
                    ConcurError::RateLimited { .. } | ConcurError::Unavailable { .. }
                );
            // A 503 or a timeout asks for a five-minute pause: never retried here.
            if !error.is_transient() || !repeatable || error.pause().is_some() {
                return Err(error);
            }
            let decision = self.config.retry.decide(
                attempt,
                error.retry_after(),
                Instant::now(),
                deadline,
                &mut rand::rng(),
            );
            match decision {
                Decision::GiveUp => return Err(error),
                Decision::RetryAfter(wait) => {
                    warn!(
                        op = call.op,
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        error = %error,
                        error_kind = error.kind(),
                        correlation_id = error.correlation_id().unwrap_or(""),
                        "transient Concur failure, retrying"
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    /// An API call with the app token, sent to the token's geolocation (the call's URL
    /// keeps its path and query, its origin becomes the geolocation's): on 401/403 the
    /// token is refreshed once and the call made again; a second refusal is returned as
    /// a clear auth error.
    async fn api(&self, mut call: Call, deadline: Instant) -> Result<Response, ConcurError> {
        let session = self.app_session(deadline).await?;
        call.url = session.base.rebase(&call.url);
        let first = self
            .send(&call, Some(&session.token), deadline, api_status_error)
            .await;
        let response = match first {
            Err(e @ (ConcurError::Unauthorized { .. } | ConcurError::Forbidden { .. })) => {
                warn!(
                    op = call.op,
                    correlation_id = e.correlation_id().unwrap_or(""),
                    "Concur refused the app token, refreshing it once"
                );
                self.invalidate_app_token(&session.token).await;
                let fresh = self.app_session(deadline).await?;
                call.url = fresh.base.rebase(&call.url);
                self.send(&call, Some(&fresh.token), deadline, api_status_error)
                    .await?
            }
            other => other?,
        };
        response.reject_error_body()
    }

    // ----- app token ---------------------------------------------------------------

    fn token_form(&self, grant: &[(&str, &str)], credentials: &Credentials) -> String {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("client_id", &credentials.client_id);
        form.append_pair("client_secret", credentials.client_secret.expose_secret());
        for (key, value) in grant {
            form.append_pair(key, value);
        }
        form.finish()
    }

    /// A token grant. `idempotent: false` for a grant that consumes what it is given
    /// (the single-use request token): it is then repeated only after an answer that
    /// proves it was not processed (429, 5xx), never after a timeout or a lost answer.
    ///
    /// A grant refused with `invalid_client` (the supplier rotated the client secret)
    /// fetches the secret once more from its source and, if it changed, is made once
    /// more with it: a refusal of the client proves the grant was not processed.
    async fn token_call(
        &self,
        base: &BaseUrl,
        grant: &[(&str, &str)],
        idempotent: bool,
        deadline: Instant,
    ) -> Result<(TokenResponse, CallInfo), ConcurError> {
        let used = self.credentials();
        let first = self
            .token_call_with(base, grant, idempotent, deadline, &used)
            .await;
        match first {
            Err(ConcurError::OAuth { ref error, .. })
                if error.error.as_deref() == Some("invalid_client") =>
            {
                match self.refetch_credentials(&used).await {
                    Some(fresh) => {
                        warn!("Concur refused the client credentials (invalid_client); trying the re-fetched secret once");
                        self.token_call_with(base, grant, idempotent, deadline, &fresh)
                            .await
                    }
                    None => first,
                }
            }
            other => other,
        }
    }

    /// The client credentials in use.
    fn credentials(&self) -> Credentials {
        match self.credentials.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// After `used` was refused: the credentials another task fetched meanwhile, or fetch
    /// them from the secret provider (one fetch at a time). `None` when there is no
    /// provider, the fetch failed, or the secret did not change.
    async fn refetch_credentials(&self, used: &Credentials) -> Option<Credentials> {
        let _one_at_a_time = self.refetch.lock().await;
        let current = self.credentials();
        if !current.same_as(used) {
            return Some(current);
        }
        let provider = self.secret_provider.as_ref()?;
        let fresh = match provider.fetch().await {
            Ok((client_id, client_secret)) => Credentials {
                client_id,
                client_secret,
            },
            Err(message) => {
                warn!(error = %message, "the client secret could not be fetched again");
                return None;
            }
        };
        if fresh.same_as(used) {
            warn!("the re-fetched client secret is unchanged");
            return None;
        }
        match self.credentials.write() {
            Ok(mut c) => *c = fresh.clone(),
            Err(poisoned) => *poisoned.into_inner() = fresh.clone(),
        }
        Some(fresh)
    }

    async fn token_call_with(
        &self,
        base: &BaseUrl,
        grant: &[(&str, &str)],
        idempotent: bool,
        deadline: Instant,
        credentials: &Credentials,
    ) -> Result<(TokenResponse, CallInfo), ConcurError> {
        let call = Call {
            op: "token",
            method: Method::POST,
            url: base.join("/oauth2/v0/token"),
            body: Body::Form(self.token_form(grant, credentials)),
            idempotent,
        };
        let response = self.send(&call, None, deadline, token_status_error).await?;
        let parsed: TokenResponse = serde_json::from_str(&response.body).map_err(|e| {
            response.malformed(format!("token response: {}", privacy::json_error(&e)))
        })?;
        if parsed.access_token.trim().is_empty() {
            return Err(response.malformed("token response without access_token"));
        }
        if parsed.access_token.len() > MAX_TOKEN_LEN {
            return Err(response.malformed("access_token longer than the cap"));
        }
        Ok((parsed, response.info))
    }

    /// The app token (client-credentials grant), from the cache while it is fresh.
    pub async fn app_token(&self, deadline: Instant) -> Result<SecretString, ConcurError> {
        Ok(self.app_session(deadline).await?.token)
    }

    /// Where calls made with the app token go: the `geolocation` of the grant's answer
    /// (auth page, "Base URIs for All Other Calls"), or the configured `api_base` when
    /// the answer named none. Obtains the token when none is cached.
    pub async fn app_base(&self, deadline: Instant) -> Result<BaseUrl, ConcurError> {
        Ok(self.app_session(deadline).await?.base)
    }

    /// The app token and its base URI, from the cache while the token is fresh. A
    /// geolocation that is not a Concur (or loopback) origin is refused, never called.
    async fn app_session(&self, deadline: Instant) -> Result<AppSession, ConcurError> {
        let mut cached = self.app_token.lock().await;
        if let Some(token) = cached.as_ref() {
            if Instant::now() < token.refresh_at {
                return Ok(self.session_of(token));
            }
        }
        let (response, _) = self
            .token_call(
                &self.config.token_base,
                &[("grant_type", "client_credentials")],
                true,
                deadline,
            )
            .await?;
        let geolocation = match response.geolocation.as_deref().map(str::trim) {
            Some(geolocation) if !geolocation.is_empty() => Some(BaseUrl::parse(geolocation)?),
            _ => None,
        };
        let lifetime = response.lifetime();
        let margin = self.config.token_refresh_margin.min(lifetime / 2);
        let token = CachedToken {
            token: SecretString::from(response.access_token),
            geolocation,
            refresh_at: Instant::now() + (lifetime - margin),
        };
        debug!(
            lifetime_s = lifetime.as_secs(),
            geolocation = token
                .geolocation
                .as_ref()
                .map(|g| g.host())
                .unwrap_or_default(),
            "app token obtained"
        );
        let session = self.session_of(&token);
        *cached = Some(token);
        Ok(session)
    }

    fn session_of(&self, token: &CachedToken) -> AppSession {
        AppSession {
            token: token.token.clone(),
            base: token
                .geolocation
                .clone()
                .unwrap_or_else(|| self.config.api_base.clone()),
        }
    }

    /// Forget the cached app token if it is still `rejected` (another task may already
    /// have replaced it).
    async fn invalidate_app_token(&self, rejected: &SecretString) {
        let mut cached = self.app_token.lock().await;
        if cached
            .as_ref()
            .is_some_and(|c| c.token.expose_secret() == rejected.expose_secret())
        {
            *cached = None;
        }
    }

    // ----- user tokens -------------------------------------------------------------

    fn user_tokens(
        &self,
        response: TokenResponse,
        info: CallInfo,
        fallback_refresh: Option<&SecretString>,
        fallback_geolocation: Option<&BaseUrl>,
        fallback_user: Option<&str>,
    ) -> Result<UserTokens, ConcurError> {
        let expires_in = response.lifetime();
        let refresh_expires_at = response.refresh_expires_at(chrono::Utc::now());
        let malformed = |message: &str| ConcurError::Malformed {
            info: info.clone(),
            message: message.to_owned(),
        };
        if response
            .refresh_token
            .as_ref()
            .is_some_and(|t| t.len() > MAX_TOKEN_LEN)
        {
            return Err(malformed("refresh_token longer than the cap"));
        }
        let refresh_token = match response.refresh_token.filter(|t| !t.trim().is_empty()) {
            Some(token) => SecretString::from(token),
            None => fallback_refresh
                .cloned()
                .ok_or_else(|| malformed("token response without refresh_token"))?,
        };
        let geolocation = match response.geolocation.filter(|g| !g.trim().is_empty()) {
            Some(geolocation) => BaseUrl::parse(&geolocation)?,
            None => fallback_geolocation
                .cloned()
                .ok_or_else(|| malformed("token response without geolocation"))?,
        };
        let user_id = response
            .id_token
            .as_deref()
            .and_then(id_token_subject)
            .or_else(|| fallback_user.map(str::to_owned));
        Ok(UserTokens {
            expires_in,
            refresh_expires_at,
            access_token: SecretString::from(response.access_token),
            refresh_token,
            geolocation,
            user_id,
            scope: response.scope,
        })
    }

    /// Exchange a connection request's token for the user's tokens: password grant with
    /// `credtype=authtoken`, against the GLZ base URI. `user_id` is the request's `userId`.
    ///
    /// An OAuth error code 16 ("user lives elsewhere") names the user's `geolocation`:
    /// the grant is made once more there (a refusal proves the grant was not processed,
    /// so the single-use token is still unspent). A geolocation that is not a Concur (or
    /// loopback) origin is refused; a second code 16 is returned, never followed. Every
    /// other refusal (103, 108, 136, ...) is final for this token and returned at once.
    pub async fn exchange_request_token(
        &self,
        user_id: &str,
        request_token: &SecretString,
        deadline: Instant,
    ) -> Result<UserTokens, ConcurError> {
        let grant = [
            ("grant_type", "password"),
            ("credtype", "authtoken"),
            ("username", user_id),
            ("password", request_token.expose_secret()),
        ];
        let first = self
            .token_call(&self.config.authtoken_base, &grant, false, deadline)
            .await;
        let (response, info) = match first {
            Err(ConcurError::OAuth { info, error })
                if error.kind() == OAuthErrorKind::UserLivesElsewhere =>
            {
                let geolocation = error
                    .geolocation
                    .as_deref()
                    .map(str::trim)
                    .filter(|g| !g.is_empty());
                let Some(geolocation) = geolocation else {
                    return Err(ConcurError::OAuth { info, error });
                };
                let base = BaseUrl::parse(geolocation)?;
                warn!(
                    geolocation = %base.host(),
                    correlation_id = info.correlation_id.as_deref().unwrap_or(""),
                    "the user lives elsewhere (OAuth code 16); exchanging once more there"
                );
                self.token_call(&base, &grant, false, deadline).await?
            }
            other => other?,
        };
        self.user_tokens(response, info, None, None, Some(user_id))
    }

    /// Refresh a user's tokens at their geolocation. The answer's refresh token (which may
    /// have rotated) and geolocation replace the stored ones.
    pub async fn refresh_user_token(
        &self,
        geolocation: &BaseUrl,
        refresh_token: &SecretString,
        deadline: Instant,
    ) -> Result<UserTokens, ConcurError> {
        let (response, info) = self
            .token_call(
                geolocation,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token.expose_secret()),
                ],
                true,
                deadline,
            )
            .await?;
        self.user_tokens(response, info, Some(refresh_token), Some(geolocation), None)
    }

    /// Revoke every refresh token of the user for this app (`DELETE /app-mgmt/v0/connections`
    /// with the user's access token).
    pub async fn revoke_connection(
        &self,
        geolocation: &BaseUrl,
        user_access_token: &SecretString,
        deadline: Instant,
    ) -> Result<(), ConcurError> {
        let call = Call {
            op: "revoke",
            method: Method::DELETE,
            url: geolocation.join("/app-mgmt/v0/connections"),
            body: Body::Empty,
            idempotent: true,
        };
        self.send(&call, Some(user_access_token), deadline, api_status_error)
            .await?;
        Ok(())
    }

    // ----- connection requests ------------------------------------------------------

    fn collection_url(&self) -> Url {
        self.config
            .api_base
            .join(&self.config.version.collection_path())
    }

    fn item_url(&self, id: &str) -> Result<Url, ConcurError> {
        if id.trim().is_empty() {
            return Err(ConcurError::Invalid("empty connection request id".into()));
        }
        let mut url = self.collection_url();
        url.path_segments_mut()
            .map_err(|_| ConcurError::Invalid("base URL cannot take a path".into()))?
            .pop_if_empty()
            .push(id);
        Ok(url)
    }

    fn check_offset(&self, offset: &str) -> Result<(), ConcurError> {
        if self.config.version.integer_offsets() && offset.parse::<u32>().is_err() {
            return Err(ConcurError::Invalid(format!(
                "offset {} is not a non-negative integer",
                privacy::code(offset)
            )));
        }
        Ok(())
    }

    /// The offset of a `NextPage` URI (see [`next_page_offset`]). Only the offset is
    /// taken: the URI's host is never followed. It may name another host than the one
    /// called (the app token's geolocation, or the configured base): that is returned,
    /// for the caller to log once per run.
    fn next_offset(
        &self,
        response: &Response,
        next_page: &str,
    ) -> Result<(String, Option<ForeignNextPage>), ConcurError> {
        let next = next_page_offset(
            &response.url,
            next_page,
            self.config.version.integer_offsets(),
        )
        .map_err(|e| response.malformed(e))?;
        let foreign = next.foreign_host.map(|host| ForeignNextPage {
            next_page_host: host,
            api_host: response.url.host_str().unwrap_or_default().to_owned(),
        });
        Ok((next.offset, foreign))
    }

    fn parse_body<T>(
        &self,
        response: &Response,
        from_xml: fn(&str) -> Result<T, ModelError>,
        from_json: fn(&str) -> Result<T, ModelError>,
    ) -> Result<T, ConcurError> {
        let parsed = if response.is_xml() {
            from_xml(&response.body)
        } else {
            from_json(&response.body)
        };
        parsed.map_err(|e| response.malformed(e))
    }

    /// One page of pending requests: `limit` in 1..=10, `offset` from the previous page's
    /// `NextPage` (none for the first page).
    pub async fn list_page(
        &self,
        limit: u32,
        offset: Option<&str>,
        deadline: Instant,
    ) -> Result<Page, ConcurError> {
        if !(1..=MAX_PAGE_LIMIT).contains(&limit) {
            return Err(ConcurError::Invalid(format!(
                "limit {limit} is outside 1..={MAX_PAGE_LIMIT}"
            )));
        }
        if let Some(offset) = offset {
            self.check_offset(offset)?;
        }
        let mut url = self.collection_url();
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("limit", &limit.to_string());
            if let Some(offset) = offset {
                query.append_pair("offset", offset);
            }
        }
        let call = Call {
            op: "list",
            method: Method::GET,
            url,
            body: Body::Empty,
            idempotent: true,
        };
        let response = self.api(call, deadline).await?;
        let wire: WireCollection =
            self.parse_body(&response, xml::parse_collection, json::parse_collection)?;
        let page = ConnectionRequestPage::from_wire(wire);
        let (next_offset, foreign_next_page) = match page.next_page.as_deref() {
            Some(next) => {
                let (offset, foreign) = self.next_offset(&response, next)?;
                (Some(offset), foreign)
            }
            None => (None, None),
        };
        Ok(Page {
            items: page.items,
            quarantined: page.quarantined,
            degraded: page.degraded,
            next_offset,
            correlation_id: response.info.correlation_id,
            foreign_next_page,
        })
    }

    /// A pager over the queue, following `NextPage` offsets until it is null.
    pub fn pages(&self, limit: u32) -> Pager<'_> {
        Pager {
            client: self,
            limit,
            next: Some(None),
        }
    }

    /// One connection request by id (certification and testing only).
    pub async fn get(&self, id: &str, deadline: Instant) -> Result<ConnectionRequest, ConcurError> {
        let call = Call {
            op: "get",
            method: Method::GET,
            url: self.item_url(id)?,
            body: Body::Empty,
            idempotent: true,
        };
        let response = self.api(call, deadline).await?;
        let wire: WireConnectionRequest =
            self.parse_body(&response, xml::parse_request, json::parse_request)?;
        ConnectionRequest::from_wire(wire).map_err(|e| response.malformed(e))
    }

    /// Create a pending request for a user login (certification only). Returns the new
    /// id when the (deprecated) response body carries one. Not retried after a timeout.
    pub async fn create_for_user(
        &self,
        login: &str,
        deadline: Instant,
    ) -> Result<Option<String>, ConcurError> {
        if login.trim().is_empty() {
            return Err(ConcurError::Invalid("empty user login".into()));
        }
        let mut url = self.collection_url();
        url.query_pairs_mut().append_pair("user", login);
        let call = Call {
            op: "create",
            method: Method::POST,
            url,
            body: Body::Empty,
            idempotent: false,
        };
        let response = self.api(call, deadline).await?;
        Ok(if response.is_xml() {
            xml::parse_create_response(&response.body)
        } else {
            json::parse_create_response(&response.body)
        })
    }

    /// Report a status: `PUT .../{id}` with the version's body; 204 expected. Sending the
    /// same status twice is harmless, so transient failures are retried.
    pub async fn update_status(
        &self,
        id: &str,
        status: ConnectionStatus,
        deadline: Instant,
    ) -> Result<(), ConcurError> {
        if !status.is_reportable() {
            return Err(ConcurError::Invalid(format!(
                "{status} is not a status a partner may report"
            )));
        }
        let (content_type, body) = self.config.version.status_body(id, status);
        let call = Call {
            op: "update_status",
            method: Method::PUT,
            url: self.item_url(id)?,
            body: Body::Typed(content_type, body),
            idempotent: true,
        };
        self.api(call, deadline).await?;
        Ok(())
    }
}

/// What the client takes from a `NextPage` URI: its offset, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextPage {
    /// The `offset` query parameter (a non-negative integer where the API version has
    /// integer offsets).
    pub offset: String,
    /// The URI's host when it is not the host that was called. It is never called: the
    /// next page is asked of the same base as this one.
    pub foreign_host: Option<String>,
}

/// Read a `NextPage` value against the URL that was `called`: an absolute URI or one
/// relative to `called`. Only its `offset` is taken; its scheme, host, port and path are
/// never followed. The error says what is wrong without quoting the value.
pub fn next_page_offset(
    called: &Url,
    next_page: &str,
    integer_offsets: bool,
) -> Result<NextPage, String> {
    let url = Url::parse(next_page)
        .or_else(|_| called.join(next_page))
        .map_err(|e| format!("NextPage is not a URL: {e}"))?;
    let foreign_host = url
        .host_str()
        .filter(|host| !host.eq_ignore_ascii_case(called.host_str().unwrap_or_default()))
        .map(str::to_owned);
    let offset = url
        .query_pairs()
        .find(|(key, _)| key.eq_ignore_ascii_case("offset"))
        .map(|(_, value)| value.into_owned())
        .ok_or("NextPage has no offset")?;
    if integer_offsets && offset.parse::<u32>().is_err() {
        return Err(format!(
            "NextPage offset {} is not an integer",
            privacy::code(&offset)
        ));
    }
    Ok(NextPage {
        offset,
        foreign_host,
    })
}

/// Walks the queue page by page. Stops after the page whose `NextPage` is null.
pub struct Pager<'a> {
    client: &'a ConcurClient,
    limit: u32,
    /// `Some(offset)`: the next page to fetch (`None` offset: the first); `None`: done.
    next: Option<Option<String>>,
}

impl Pager<'_> {
    /// The next page, or `None` once the queue is drained. After an error the same page
    /// is asked for again on the next call.
    pub async fn next_page(&mut self, deadline: Instant) -> Option<Result<Page, ConcurError>> {
        let offset = self.next.clone()?;
        let result = self
            .client
            .list_page(self.limit, offset.as_deref(), deadline)
            .await;
        if let Ok(page) = &result {
            self.next = page.next_offset.clone().map(Some);
        }
        Some(result)
    }
}
