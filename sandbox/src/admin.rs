//! The admin API under `/_sandbox/` (no bearer token): clock, request states and
//! history, users, seeding, fault rules.

use std::path::{Path, PathBuf};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::clock::rfc3339;
use crate::faults::FaultRule;
use crate::seed::{self, SeedData};
use crate::state::{ConnRequest, CrState, QueueError, User, World};
use crate::{SharedState, StartError};

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/clock", get(clock))
        .route("/clock/advance", post(advance))
        .route("/requests", get(requests).post(create_request))
        .route("/requests/{id}", get(request))
        .route("/summary", get(summary))
        .route("/users", get(users).post(create_users))
        .route("/seed", post(seed_route))
        .route("/verify", get(verify))
        .route("/faults", get(faults).post(set_faults).delete(clear_faults))
}

fn bad(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

fn clock_json(state: &SharedState) -> serde_json::Value {
    json!({
        "now": rfc3339(state.now()),
        "offset_seconds": state.clock.offset_seconds(),
        "frozen": state.clock.is_frozen(),
    })
}

async fn clock(State(state): State<SharedState>) -> Response {
    Json(clock_json(&state)).into_response()
}

#[derive(Deserialize)]
struct Advance {
    seconds: i64,
}

async fn advance(State(state): State<SharedState>, body: Option<Json<Advance>>) -> Response {
    let Some(Json(a)) = body else {
        return bad(StatusCode::BAD_REQUEST, "body must be {\"seconds\": N}");
    };
    if a.seconds < 0 {
        return bad(StatusCode::BAD_REQUEST, "the clock only moves forward");
    }
    let now = state.clock.advance(a.seconds);
    state.world().promote(now);
    Json(clock_json(&state)).into_response()
}

/// One request as the admin API shows it.
#[derive(Serialize)]
pub struct RequestView<'a> {
    pub id: Uuid,
    pub user_id: Uuid,
    pub login_id: Option<&'a str>,
    pub state: CrState,
    pub attempt: u32,
    pub creu_count: u32,
    pub crret_count: u32,
    pub created_at: String,
    pub last_modified: String,
    pub visible_since: String,
    pub requeue_at: Option<String>,
    pub current_request_token: Option<&'a str>,
    pub tokens_issued: u32,
    pub get_count: u32,
    pub accepted_puts: usize,
    pub rejected_puts: usize,
    pub history: &'a [crate::state::PutRecord],
    pub exchanges: &'a [crate::state::ExchangeRecord],
    pub exchange_attempts: &'a [crate::state::ExchangeAttempt],
}

fn request_view<'a>(w: &'a World, r: &'a ConnRequest) -> RequestView<'a> {
    RequestView {
        id: r.id,
        user_id: r.user_id,
        login_id: w.user(r.user_id).map(|u| u.login_id.as_str()),
        state: r.state,
        attempt: r.attempt,
        creu_count: r.creu_count,
        crret_count: r.crret_count,
        created_at: rfc3339(r.created_at),
        last_modified: rfc3339(r.last_modified),
        visible_since: rfc3339(r.visible_since),
        requeue_at: r.requeue_at.map(rfc3339),
        current_request_token: r.current_token.as_deref(),
        tokens_issued: r.tokens_issued,
        get_count: r.get_count,
        accepted_puts: r.history.iter().filter(|h| h.accepted).count(),
        rejected_puts: r.history.iter().filter(|h| !h.accepted).count(),
        history: &r.history,
        exchanges: &r.exchanges,
        exchange_attempts: &r.exchange_attempts,
    }
}

#[derive(Deserialize)]
struct RequestsQuery {
    state: Option<String>,
}

async fn requests(State(state): State<SharedState>, Query(q): Query<RequestsQuery>) -> Response {
    let now = state.now();
    let mut w = state.world();
    w.promote(now);
    let list: Vec<RequestView> = w
        .requests
        .iter()
        .filter(|r| match &q.state {
            None => true,
            Some(s) => serde_json::to_value(r.state)
                .ok()
                .and_then(|v| v.as_str().map(|x| x == s))
                .unwrap_or(false),
        })
        .map(|r| request_view(&w, r))
        .collect();
    Json(json!({ "now": rfc3339(now), "requests": list })).into_response()
}

async fn request(State(state): State<SharedState>, UrlPath(id): UrlPath<String>) -> Response {
    let Ok(id) = Uuid::parse_str(&id) else {
        return bad(StatusCode::NOT_FOUND, "no such request");
    };
    let now = state.now();
    let mut w = state.world();
    w.promote(now);
    match w.request(id) {
        Some(r) => Json(json!(request_view(&w, r))).into_response(),
        None => bad(StatusCode::NOT_FOUND, "no such request"),
    }
}

async fn summary(State(state): State<SharedState>) -> Response {
    let now = state.now();
    let mut w = state.world();
    w.promote(now);
    let count = |s: CrState| w.requests.iter().filter(|r| r.state == s).count();
    let rejected: usize = w
        .requests
        .iter()
        .map(|r| r.history.iter().filter(|h| !h.accepted).count())
        .sum();
    let accepted: usize = w
        .requests
        .iter()
        .map(|r| r.history.iter().filter(|h| h.accepted).count())
        .sum();
    Json(json!({
        "now": rfc3339(now),
        "total": w.requests.len(),
        "pending": count(CrState::Pending),
        "in_flight": count(CrState::InFlight),
        "requeued_waiting": count(CrState::RequeuedWaiting),
        "connected": count(CrState::Connected),
        "failed_final": count(CrState::FailedFinal),
        "accepted_puts": accepted,
        "rejected_puts": rejected,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct NewRequest {
    /// Login id or user id.
    user: String,
    id: Option<Uuid>,
}

async fn create_request(
    State(state): State<SharedState>,
    body: Option<Json<NewRequest>>,
) -> Response {
    let Some(Json(b)) = body else {
        return bad(
            StatusCode::BAD_REQUEST,
            "body must be {\"user\": LOGIN_OR_USER_ID}",
        );
    };
    let now = state.now();
    let mut w = state.world();
    let user_id = match Uuid::parse_str(&b.user) {
        Ok(id) if w.user(id).is_some() => id,
        _ => match w.user_by_login(&b.user) {
            Some(u) => u.id,
            None => return bad(StatusCode::NOT_FOUND, "unknown user"),
        },
    };
    match w.create_request(user_id, b.id, now) {
        Ok(id) => (
            StatusCode::CREATED,
            Json(json!({ "id": id, "user_id": user_id })),
        )
            .into_response(),
        Err(QueueError::AlreadyPending) => bad(
            StatusCode::CONFLICT,
            "the user already has a pending request",
        ),
        Err(_) => bad(StatusCode::NOT_FOUND, "unknown user"),
    }
}

async fn users(State(state): State<SharedState>) -> Response {
    let w = state.world();
    Json(json!({ "users": w.users })).into_response()
}

/// `POST /_sandbox/users`: one user, or `{"count": N}` generic users.
#[derive(Deserialize)]
struct NewUsers {
    count: Option<usize>,
    id: Option<Uuid>,
    login_id: Option<String>,
    first_name: Option<String>,
    middle_name: Option<String>,
    last_name: Option<String>,
    loyalty_number: Option<String>,
    #[serde(default)]
    emails: Vec<String>,
    /// Create a pending request for each user (default true).
    with_request: Option<bool>,
}

async fn create_users(State(state): State<SharedState>, body: Option<Json<NewUsers>>) -> Response {
    let Some(Json(b)) = body else {
        return bad(
            StatusCode::BAD_REQUEST,
            "body must be a user object or {\"count\": N}",
        );
    };
    if b.emails.len() > 5 {
        return bad(StatusCode::BAD_REQUEST, "at most 5 verified e-mails");
    }
    let now = state.now();
    let with_request = b.with_request.unwrap_or(true);
    let mut w = state.world();
    let mut out = Vec::new();
    let mut new_users = Vec::new();
    match b.count {
        Some(n) => {
            if n > 100_000 {
                return bad(StatusCode::BAD_REQUEST, "count is at most 100000");
            }
            let base = w.users.len();
            for i in 0..n {
                let k = base + i + 1;
                let id = w.new_id();
                new_users.push(User {
                    id,
                    login_id: format!("user{k}@sandbox.example"),
                    first_name: format!("First{k}"),
                    middle_name: None,
                    last_name: format!("Last{k}"),
                    loyalty_number: Some(format!("{:010}", 5_000_000_000u64 + k as u64)),
                    emails: vec![format!("user{k}@mail.example")],
                });
            }
        }
        None => {
            let Some(last) = b.last_name.clone() else {
                return bad(StatusCode::BAD_REQUEST, "last_name is required");
            };
            let id = match b.id {
                Some(id) => id,
                None => w.new_id(),
            };
            let login = b
                .login_id
                .clone()
                .unwrap_or_else(|| format!("{id}@sandbox.example"));
            if w.user_by_login(&login).is_some() || w.user(id).is_some() {
                return bad(
                    StatusCode::CONFLICT,
                    "a user with this id or login id exists",
                );
            }
            new_users.push(User {
                id,
                login_id: login,
                first_name: b.first_name.clone().unwrap_or_default(),
                middle_name: b.middle_name.clone(),
                last_name: last,
                loyalty_number: b.loyalty_number.clone(),
                emails: b.emails.clone(),
            });
        }
    }
    for u in new_users {
        let uid = u.id;
        let login = u.login_id.clone();
        w.add_user(u);
        let rid = if with_request {
            w.create_request(uid, None, now).ok()
        } else {
            None
        };
        out.push(json!({ "user_id": uid, "login_id": login, "request_id": rid }));
    }
    (StatusCode::CREATED, Json(json!({ "users": out }))).into_response()
}

/// Adds the seeded users and their requests; returns what was generated.
pub fn apply_seed(state: &SharedState, seed_value: u64, n: usize) -> Result<SeedData, StartError> {
    let data = seed::generate(seed_value, n);
    let now = state.now();
    let mut w = state.world();
    for (user, rid) in &data.users {
        if w.user(user.id).is_some() || w.request(*rid).is_some() {
            return Err(StartError::Config(format!(
                "seed {seed_value} was already applied (user {} exists)",
                user.id
            )));
        }
        w.add_user(user.clone());
        w.create_request(user.id, Some(*rid), now)
            .map_err(|e| StartError::Config(format!("seeding: {e:?}")))?;
    }
    w.expectations.extend(data.expectations.iter().cloned());
    Ok(data)
}

/// The default expectations file: `<members stem>.expected.json` beside it.
pub fn default_expected_path(members: &Path) -> PathBuf {
    let stem = members
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "members".into());
    members.with_file_name(format!("{stem}.expected.json"))
}

/// Writes the member directory and the expectations.
pub fn write_seed_files(
    data: &SeedData,
    members: &Path,
    expected: Option<&Path>,
) -> std::io::Result<()> {
    let m = serde_json::to_string_pretty(&data.members).map_err(std::io::Error::other)?;
    std::fs::write(members, m + "\n")?;
    let e = serde_json::to_string_pretty(&data.expectations).map_err(std::io::Error::other)?;
    let path = expected
        .map(Path::to_path_buf)
        .unwrap_or_else(|| default_expected_path(members));
    std::fs::write(path, e + "\n")
}

#[derive(Deserialize)]
struct SeedBody {
    seed: u64,
    users: usize,
    members_out: Option<PathBuf>,
    expected_out: Option<PathBuf>,
}

async fn seed_route(State(state): State<SharedState>, body: Option<Json<SeedBody>>) -> Response {
    let Some(Json(b)) = body else {
        return bad(
            StatusCode::BAD_REQUEST,
            "body must be {\"seed\": S, \"users\": N}",
        );
    };
    if b.users > 100_000 {
        return bad(StatusCode::BAD_REQUEST, "users is at most 100000");
    }
    let data = match apply_seed(&state, b.seed, b.users) {
        Ok(d) => d,
        Err(e) => return bad(StatusCode::CONFLICT, e.to_string()),
    };
    if let Some(p) = &b.members_out {
        if let Err(e) = write_seed_files(&data, p, b.expected_out.as_deref()) {
            return bad(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("writing {}: {e}", p.display()),
            );
        }
    }
    (
        StatusCode::CREATED,
        Json(json!({
            "users": data.users.len(),
            "members": data.members,
            "expectations": data.expectations,
        })),
    )
        .into_response()
}

async fn faults(State(state): State<SharedState>) -> Response {
    let f = state.faults();
    Json(json!({ "rules": f.rules })).into_response()
}

#[derive(Deserialize)]
struct SetFaults {
    rules: Vec<String>,
    #[serde(default)]
    replace: bool,
}

async fn set_faults(State(state): State<SharedState>, body: Option<Json<SetFaults>>) -> Response {
    let Some(Json(b)) = body else {
        return bad(
            StatusCode::BAD_REQUEST,
            "body must be {\"rules\": [\"ROUTE:KIND[:OPTION]...\"], \"replace\": false}",
        );
    };
    let mut parsed = Vec::new();
    for s in &b.rules {
        match FaultRule::parse(s) {
            Ok(r) => parsed.push(r),
            Err(e) => return bad(StatusCode::BAD_REQUEST, e),
        }
    }
    let mut f = state.faults();
    if b.replace {
        f.rules.clear();
    }
    f.rules.extend(parsed);
    Json(json!({ "rules": f.rules })).into_response()
}

async fn clear_faults(State(state): State<SharedState>) -> Response {
    state.faults().rules.clear();
    Json(json!({ "rules": [] })).into_response()
}

/// `GET /_sandbox/verify`: every seeded request against its expected status.
///
/// A request *matches* when the first status accepted for it equals the
/// expected one. It is *unreported* when no status was accepted yet. Any
/// rejected PUT (a status for a request that was not awaiting one) or two
/// accepted statuses for one attempt count as *duplicates*. `ok` is true when
/// every seeded request matched and there were no duplicates.
async fn verify(State(state): State<SharedState>) -> Response {
    let now = state.now();
    let mut w = state.world();
    w.promote(now);
    let mut results = Vec::new();
    let (mut matched, mut mismatched, mut unreported, mut duplicates) =
        (0usize, 0usize, 0usize, 0usize);
    for e in &w.expectations {
        let r = Uuid::parse_str(&e.request_id)
            .ok()
            .and_then(|id| w.request(id));
        let (accepted, rejected, dup_attempt, state_s) = match r {
            Some(r) => {
                let accepted: Vec<&str> = r
                    .history
                    .iter()
                    .filter(|h| h.accepted)
                    .map(|h| h.status.as_str())
                    .collect();
                let mut attempts: Vec<u32> = r
                    .history
                    .iter()
                    .filter(|h| h.accepted)
                    .map(|h| h.attempt)
                    .collect();
                let n = attempts.len();
                attempts.dedup();
                let rejected = r.history.iter().filter(|h| !h.accepted).count();
                let state_s = serde_json::to_value(r.state).unwrap_or_default();
                (accepted, rejected, attempts.len() != n, state_s)
            }
            None => (Vec::new(), 0, false, serde_json::Value::Null),
        };
        let first = accepted.first().copied();
        let outcome = match first {
            None => {
                unreported += 1;
                "unreported"
            }
            Some(s) if s == e.expected => {
                matched += 1;
                "matched"
            }
            Some(_) => {
                mismatched += 1;
                "mismatched"
            }
        };
        if rejected > 0 || dup_attempt {
            duplicates += 1;
        }
        results.push(json!({
            "request_id": e.request_id,
            "case": e.case,
            "expected": e.expected,
            "reported": accepted,
            "rejected_puts": rejected,
            "state": state_s,
            "outcome": outcome,
        }));
    }
    let ok = !w.expectations.is_empty() && matched == w.expectations.len() && duplicates == 0;
    Json(json!({
        "ok": ok,
        "seeded": w.expectations.len(),
        "matched": matched,
        "mismatched": mismatched,
        "unreported": unreported,
        "duplicates": duplicates,
        "requests": results,
    }))
    .into_response()
}
