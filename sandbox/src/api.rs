//! The Connection Requests API: `/api/v3.x/common/connectionrequests[/{id}]`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use crate::clock::concur_timestamp;
use crate::formats::{self, CrView, Format, Version};
use crate::state::{AccessToken, ConnRequest, CrState, Principal, QueueError, User, World};
use crate::SharedState;

/// Maximum page size (the page: "the maximum is 10"); larger values are clamped.
pub const MAX_LIMIT: i64 = 10;
/// Default page size (the page: "The default is 5").
pub const DEFAULT_LIMIT: i64 = 5;

/// An error response with the Error body of the HTTP status codes page.
pub fn error(state: &SharedState, status: StatusCode, f: Format, message: &str) -> Response {
    let now = state.now();
    let body = formats::render_error(
        f,
        message,
        &concur_timestamp(now),
        &Uuid::new_v4().to_string(),
    );
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(f.content_type()),
    );
    r
}

fn ok_body(status: StatusCode, f: Format, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(f.content_type()),
    );
    r
}

/// Parses `/api/{version}/common/connectionrequests[/{id}][/]`, case-insensitively.
pub fn parse_path(path: &str) -> Option<(Version, Option<String>)> {
    let rest = path.strip_prefix("/api/")?;
    let mut segs: Vec<&str> = rest.split('/').collect();
    if segs.last() == Some(&"") {
        segs.pop();
    }
    if segs.len() < 3 || segs.len() > 4 {
        return None;
    }
    let version = Version::parse(segs[0])?;
    if !segs[1].eq_ignore_ascii_case("common")
        || !segs[2].eq_ignore_ascii_case("connectionrequests")
    {
        return None;
    }
    Some((version, segs.get(3).map(|s| s.to_string())))
}

/// Checks the bearer token: an unexpired app token (client credentials).
#[allow(clippy::result_large_err)]
pub fn check_app_token(
    state: &SharedState,
    headers: &HeaderMap,
    f: Format,
) -> Result<(), Response> {
    match bearer(state, headers) {
        Ok(AccessToken {
            principal: Principal::App,
            ..
        }) => Ok(()),
        Ok(_) => Err(error(
            state,
            StatusCode::FORBIDDEN,
            f,
            "A user token cannot manage connection requests; use the application's token (client credentials grant).",
        )),
        Err(BearerError::Missing) => Err(unauthorized(
            state,
            f,
            "The Authorization header is not included in the request.",
        )),
        Err(BearerError::Invalid) => Err(unauthorized(
            state,
            f,
            "The bearer token is not valid.",
        )),
        Err(BearerError::Expired) => {
            let status = state.settings.expired_token_status;
            let mut r = error(state, status, f, "The OAuth token has expired or been revoked.");
            if status == StatusCode::UNAUTHORIZED {
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            Err(r)
        }
    }
}

fn unauthorized(state: &SharedState, f: Format, msg: &str) -> Response {
    let mut r = error(state, StatusCode::UNAUTHORIZED, f, msg);
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    Missing,
    Invalid,
    Expired,
}

/// Looks up the `Authorization: Bearer` token.
pub fn bearer(state: &SharedState, headers: &HeaderMap) -> Result<AccessToken, BearerError> {
    let raw = headers
        .get(header::AUTHORIZATION)
        .ok_or(BearerError::Missing)?
        .to_str()
        .map_err(|_| BearerError::Invalid)?
        .trim();
    let (scheme, token) = raw.split_once(' ').ok_or(BearerError::Invalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(BearerError::Invalid);
    }
    let now = state.now();
    let world = state.world();
    let t = world
        .access_tokens
        .get(token.trim())
        .ok_or(BearerError::Invalid)?;
    if t.expires_at <= now {
        return Err(BearerError::Expired);
    }
    Ok(t.clone())
}

fn query_pairs(uri: &Uri) -> Result<Vec<(String, String)>, String> {
    match uri.query() {
        None => Ok(Vec::new()),
        Some(q) => serde_urlencoded::from_str::<Vec<(String, String)>>(q)
            .map_err(|e| format!("malformed query string: {e}")),
    }
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The v3.0/v3.1 `status` filter values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusFilter {
    Pending,
    Processing,
    Connected,
    Failed,
    Retry,
}

impl StatusFilter {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "pending" => Self::Pending,
            "processing" => Self::Processing,
            "connected" => Self::Connected,
            "failed" => Self::Failed,
            "retry" => Self::Retry,
            _ => return None,
        })
    }
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Processing => "Processing",
            Self::Connected => "Connected",
            Self::Failed => "Failed",
            Self::Retry => "Retry",
        }
    }
}

/// The `status` field as each version spells it.
fn status_text(v: Version, s: CrState) -> String {
    let t = match (v, s) {
        (Version::V32, CrState::Pending | CrState::InFlight) => "Pending",
        (_, CrState::Pending) => "Pending",
        (_, CrState::InFlight) => "Processing",
        (_, CrState::RequeuedWaiting) => "Retry",
        (_, CrState::Connected) => "Connected",
        (_, CrState::FailedFinal) => "Failed",
    };
    // The v3.0 resource page's examples spell it in lower case.
    if v == Version::V30 {
        t.to_ascii_lowercase()
    } else {
        t.to_string()
    }
}

fn view(state: &SharedState, v: Version, r: &ConnRequest, user: Option<&User>) -> CrView {
    let base = &state.settings.base_url;
    let mut emails: [Option<String>; 5] = Default::default();
    if let Some(u) = user {
        for (slot, e) in emails.iter_mut().zip(u.emails.iter()) {
            *slot = Some(e.clone());
        }
    }
    CrView {
        id: r.id.to_string(),
        uri: format!("{base}{}{}", v.collection_path(), r.id),
        first_name: user.map(|u| u.first_name.clone()),
        middle_name: user.and_then(|u| u.middle_name.clone()),
        last_name: user.map(|u| u.last_name.clone()),
        loyalty_number: user.and_then(|u| u.loyalty_number.clone()),
        status: status_text(v, r.state),
        request_token: r.current_token.clone(),
        last_modified: concur_timestamp(r.last_modified),
        emails,
        user_id: r.user_id.to_string(),
    }
}

/// Every `/api/...` call.
pub async fn dispatch(
    State(state): State<SharedState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let Some((version, id)) = parse_path(uri.path()) else {
        return error(
            &state,
            StatusCode::NOT_FOUND,
            f,
            "The requested resource was not found.",
        );
    };
    // Unsupported methods answer 405 before authentication.
    let allowed = matches!(
        (&id, &method),
        (None, &Method::GET | &Method::POST) | (Some(_), &Method::GET | &Method::PUT)
    );
    if !allowed {
        return crate::method_not_allowed(if id.is_none() {
            "GET, POST"
        } else {
            "GET, PUT"
        });
    }
    if let Err(r) = check_app_token(&state, &headers, f) {
        return r;
    }
    // The HTTP status codes page: "Concur does not support Chunked Transfer-Encoding" (400).
    let chunked = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return error(
            &state,
            StatusCode::BAD_REQUEST,
            f,
            "Chunked Transfer-Encoding is not supported.",
        );
    }
    let pairs = match query_pairs(&uri) {
        Ok(p) => p,
        Err(e) => return error(&state, StatusCode::BAD_REQUEST, f, &e),
    };
    match (id, method) {
        (None, Method::GET) => list(&state, version, f, &pairs),
        (None, _) => create(&state, version, f, &pairs),
        (Some(id), Method::GET) => get_one(&state, version, f, &id),
        (Some(id), _) => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            put(&state, version, f, &id, ct, &body)
        }
    }
}

fn parse_int(name: &str, raw: Option<&str>) -> Result<Option<i64>, String> {
    match raw {
        None => Ok(None),
        // Int32, as the Swagger declares (and the .NET back end binds).
        Some(s) => s
            .trim()
            .parse::<i32>()
            .map(|v| Some(i64::from(v)))
            .map_err(|_| format!("{name} must be a 32-bit integer, got {s:?}")),
    }
}

fn list(state: &SharedState, v: Version, f: Format, pairs: &[(String, String)]) -> Response {
    let limit = match parse_int("limit", param(pairs, "limit")) {
        Ok(l) => l.unwrap_or(DEFAULT_LIMIT),
        Err(e) => return error(state, StatusCode::BAD_REQUEST, f, &e),
    };
    if limit <= 0 {
        return error(
            state,
            StatusCode::BAD_REQUEST,
            f,
            "limit must be a positive integer.",
        );
    }
    let limit = limit.min(MAX_LIMIT);
    let offset = match parse_int("offset", param(pairs, "offset")) {
        Ok(o) => o.unwrap_or(0),
        Err(e) => return error(state, StatusCode::BAD_REQUEST, f, &e),
    };
    if offset < 0 {
        return error(
            state,
            StatusCode::BAD_REQUEST,
            f,
            "offset must not be negative.",
        );
    }
    // v3.0/v3.1 only: the status filter.
    let filter = if v == Version::V32 {
        None
    } else {
        match param(pairs, "status") {
            None => None,
            Some(s) => match StatusFilter::parse(s) {
                Some(x) => Some(x),
                None => {
                    return error(
                        state,
                        StatusCode::BAD_REQUEST,
                        f,
                        "status must be one of Pending, Processing, Connected, Failed, Retry.",
                    )
                }
            },
        }
    };
    let now = state.now();
    let mut world = state.world();
    let ids = selection(&mut world, filter, now);
    let total = ids.len() as i64;
    let start = offset.min(total) as usize;
    let end = (offset.saturating_add(limit)).min(total) as usize;
    let mut items = Vec::with_capacity(end - start);
    for id in &ids[start..end] {
        world.issue_request_token(*id, now);
        if let Some(r) = world.request(*id) {
            items.push(view(state, v, r, world.user(r.user_id)));
        }
    }
    drop(world);
    let next = if offset.saturating_add(limit) < total {
        let mut n = format!(
            "{}{}?limit={}&offset={}",
            state.settings.base_url,
            v.collection_path(),
            limit,
            offset + limit
        );
        if let Some(s) = filter {
            n.push_str("&status=");
            n.push_str(s.as_str());
        }
        Some(n)
    } else {
        None
    };
    ok_body(
        StatusCode::OK,
        f,
        formats::render_page(v, f, &items, next.as_deref()),
    )
}

fn selection(
    world: &mut World,
    filter: Option<StatusFilter>,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<Uuid> {
    let queue = world.queue(now);
    match filter {
        None | Some(StatusFilter::Pending) => queue,
        Some(StatusFilter::Processing) => queue
            .into_iter()
            .filter(|id| world.request(*id).map(|r| r.state) == Some(CrState::InFlight))
            .collect(),
        Some(other) => {
            let want = match other {
                StatusFilter::Connected => CrState::Connected,
                StatusFilter::Failed => CrState::FailedFinal,
                _ => CrState::RequeuedWaiting,
            };
            world
                .requests
                .iter()
                .filter(|r| r.state == want)
                .map(|r| r.id)
                .collect()
        }
    }
}

fn get_one(state: &SharedState, v: Version, f: Format, id: &str) -> Response {
    let not_found = || {
        error(
            state,
            StatusCode::NOT_FOUND,
            f,
            "Connection request not found.",
        )
    };
    let Ok(id) = Uuid::parse_str(id) else {
        return not_found();
    };
    let now = state.now();
    let mut world = state.world();
    world.promote(now);
    if world.request(id).is_none() {
        return not_found();
    }
    world.issue_request_token(id, now);
    let Some(r) = world.request(id) else {
        return not_found();
    };
    let body = formats::render_one(v, f, &view(state, v, r, world.user(r.user_id)));
    drop(world);
    ok_body(StatusCode::OK, f, body)
}

fn create(state: &SharedState, v: Version, f: Format, pairs: &[(String, String)]) -> Response {
    let Some(login) = param(pairs, "user").filter(|s| !s.trim().is_empty()) else {
        return error(
            state,
            StatusCode::BAD_REQUEST,
            f,
            "The user parameter is required.",
        );
    };
    let now = state.now();
    let mut world = state.world();
    let Some(user_id) = world.user_by_login(login).map(|u| u.id) else {
        return error(state, StatusCode::BAD_REQUEST, f, "Unknown user login id.");
    };
    match world.create_request(user_id, None, now) {
        Ok(id) => {
            drop(world);
            let uri = format!("{}{}{}", state.settings.base_url, v.collection_path(), id);
            ok_body(
                StatusCode::OK,
                f,
                formats::render_created(f, &id.to_string(), &uri),
            )
        }
        Err(QueueError::AlreadyPending) => error(
            state,
            StatusCode::CONFLICT,
            f,
            "The user already has a pending connection request.",
        ),
        Err(_) => error(state, StatusCode::BAD_REQUEST, f, "Unknown user login id."),
    }
}

fn put(
    state: &SharedState,
    v: Version,
    f: Format,
    id: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Response {
    let not_found = || {
        error(
            state,
            StatusCode::NOT_FOUND,
            f,
            "Connection request not found.",
        )
    };
    let Ok(id) = Uuid::parse_str(id) else {
        return not_found();
    };
    if state.world().request(id).is_none() {
        return not_found();
    }
    let status = match formats::parse_put_status(content_type, body) {
        Ok(s) => s,
        Err(e) => return error(state, StatusCode::BAD_REQUEST, f, &e),
    };
    let now = state.now();
    let result = state.world().put_status(id, status, v.as_str(), now);
    match result {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(QueueError::NotOutstanding(s)) => error(
            state,
            StatusCode::NOT_FOUND,
            f,
            &format!(
                "Connection request is not awaiting a status (it is {}).",
                serde_json::to_value(s)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            ),
        ),
        Err(_) => not_found(),
    }
}
