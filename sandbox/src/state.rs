//! The sandbox's world: users, connection requests (the queue), tokens.
//!
//! Pure logic, no HTTP: the handlers translate [`QueueError`] and friends into
//! status codes. Everything is kept behind one mutex in [`crate::AppState`].

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::Serialize;
use uuid::Uuid;

use crate::clock::rfc3339;

/// Lifetimes and requeue rules, from the reference pages (all configurable).
#[derive(Debug, Clone)]
pub struct Rules {
    /// App and user access token lifetime (s). The OAuth2 page: one hour.
    pub access_token_ttl: i64,
    /// Request token lifetime (s). The supplier-flow diagram: 24 h.
    pub request_token_ttl: i64,
    /// Refresh token lifetime (s). The OAuth2 page: six months.
    pub refresh_token_ttl: i64,
    /// Delay before a CREU1/2/3 request comes back (s): 24 h.
    pub creu_delay: i64,
    /// How many times a CREU* may requeue a request (4); the next CREU* ends it.
    pub creu_max_requeues: u32,
    /// Delay before a CRRET request comes back (s): 1 h.
    pub crret_delay: i64,
    /// How many times CRRET may requeue a request (48); the next CRRET ends it.
    pub crret_max_requeues: u32,
    /// A new request token invalidates the earlier ones of its request (default: they
    /// keep working until they expire or one of them is exchanged).
    pub supersede_request_tokens: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            access_token_ttl: 3600,
            request_token_ttl: 24 * 3600,
            refresh_token_ttl: 183 * 24 * 3600,
            creu_delay: 24 * 3600,
            creu_max_requeues: 4,
            crret_delay: 3600,
            crret_max_requeues: 48,
            supersede_request_tokens: false,
        }
    }
}

/// A Concur user.
#[derive(Debug, Clone, Serialize)]
pub struct User {
    /// Concur user id (UUID), the `userId` field and the password-grant username.
    pub id: Uuid,
    /// Login id, the `user` parameter of POST connectionrequests.
    pub login_id: String,
    pub first_name: String,
    pub middle_name: Option<String>,
    pub last_name: String,
    pub loyalty_number: Option<String>,
    /// Verified e-mail addresses (at most 5 are shown).
    pub emails: Vec<String>,
}

/// Where a connection request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrState {
    /// In the queue, not yet returned by a GET during this attempt.
    Pending,
    /// In the queue and returned by at least one GET (has a request token); awaiting a status.
    InFlight,
    /// Popped by CREU*/CRRET/CRPA*; comes back at `requeue_at`.
    RequeuedWaiting,
    /// Popped by CRSUC: final.
    Connected,
    /// Too many CREU*/CRRET: final error state, never returned again.
    FailedFinal,
}

impl CrState {
    /// Whether the request is in the queue (returned by GET, accepts a PUT).
    pub fn outstanding(self) -> bool {
        matches!(self, CrState::Pending | CrState::InFlight)
    }
}

/// A status a partner may PUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PutStatus {
    CRSUC,
    CREU1,
    CREU2,
    CREU3,
    CRRET,
    CRPA1,
    CRPA2,
}

impl PutStatus {
    /// Parses an exact status code (upper case, as documented).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim() {
            "CRSUC" => Self::CRSUC,
            "CREU1" => Self::CREU1,
            "CREU2" => Self::CREU2,
            "CREU3" => Self::CREU3,
            "CRRET" => Self::CRRET,
            "CRPA1" => Self::CRPA1,
            "CRPA2" => Self::CRPA2,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CRSUC => "CRSUC",
            Self::CREU1 => "CREU1",
            Self::CREU2 => "CREU2",
            Self::CREU3 => "CREU3",
            Self::CRRET => "CRRET",
            Self::CRPA1 => "CRPA1",
            Self::CRPA2 => "CRPA2",
        }
    }
}

/// One PUT received for a request, accepted or not.
#[derive(Debug, Clone, Serialize)]
pub struct PutRecord {
    /// Virtual time of the PUT.
    pub at: String,
    pub status: String,
    /// The attempt the request was on when the PUT arrived.
    pub attempt: u32,
    /// Whether the PUT changed the request (false: it was not outstanding).
    pub accepted: bool,
    /// HTTP status answered.
    pub http_status: u16,
    /// API version of the call (`3.0`, `3.1`, `3.2`).
    pub version: String,
    /// State after the PUT.
    pub state_after: CrState,
}

/// One successful request-token exchange (password grant) for a request.
#[derive(Debug, Clone, Serialize)]
pub struct ExchangeRecord {
    pub at: String,
    pub attempt: u32,
}

/// One submission of a request token this request was issued (password grant with
/// `credtype=authtoken`), successful or not: tests check that no token is submitted twice.
#[derive(Debug, Clone, Serialize)]
pub struct ExchangeAttempt {
    pub at: String,
    pub attempt: u32,
    /// Which of the request's tokens (1 = the first issued).
    pub token_number: u32,
    pub ok: bool,
}

/// A connection request.
#[derive(Debug, Clone)]
pub struct ConnRequest {
    pub id: Uuid,
    pub user_id: Uuid,
    pub state: CrState,
    /// 1 for the first attempt, +1 on every requeue that comes back.
    pub attempt: u32,
    pub creu_count: u32,
    pub crret_count: u32,
    pub created_at: DateTime<Utc>,
    pub last_modified: DateTime<Utc>,
    /// When it (last) entered the queue: the FIFO order key.
    pub visible_since: DateTime<Utc>,
    /// Tie-break for equal `visible_since`.
    pub seq: u64,
    pub requeue_at: Option<DateTime<Utc>>,
    pub current_token: Option<String>,
    pub tokens_issued: u32,
    pub get_count: u32,
    pub history: Vec<PutRecord>,
    pub exchanges: Vec<ExchangeRecord>,
    pub exchange_attempts: Vec<ExchangeAttempt>,
}

/// A request token issued on GET.
#[derive(Debug, Clone)]
pub struct RequestToken {
    pub request_id: Uuid,
    pub user_id: Uuid,
    pub attempt: u32,
    pub expires_at: DateTime<Utc>,
    pub used: bool,
    /// Its number among the request's tokens (1 = the first issued).
    pub number: u32,
}

/// What an access token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    App,
    User(Uuid),
}

#[derive(Debug, Clone)]
pub struct AccessToken {
    pub principal: Principal,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct RefreshToken {
    pub user_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub revoked: bool,
}

/// Why a queue operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueError {
    /// No such request (or user).
    NotFound,
    /// The request exists but is not in the queue (already popped / final).
    NotOutstanding(CrState),
    /// The user already has a request pending or waiting to be requeued.
    AlreadyPending,
}

/// Why a password grant with `credtype=authtoken` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeError {
    /// Unknown, expired or already used request token (code 103).
    BadOrExpired,
    /// The token belongs to another user (code 136).
    NotForYou,
}

/// The whole mutable world.
#[derive(Debug)]
pub struct World {
    pub rules: Rules,
    pub users: Vec<User>,
    pub requests: Vec<ConnRequest>,
    index: HashMap<Uuid, usize>,
    pub request_tokens: HashMap<String, RequestToken>,
    pub access_tokens: HashMap<String, AccessToken>,
    pub refresh_tokens: HashMap<String, RefreshToken>,
    /// Expected outcomes of the seeded requests (for `GET /_sandbox/verify`).
    pub expectations: Vec<crate::cases::Expectation>,
    seq: u64,
    rng: StdRng,
}

/// Every personal value and secret the sandbox holds or handed out: what no log line of
/// a connector may show (a privacy test looks for each of them in the captured logs).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Secrets {
    /// First, middle and last names.
    pub names: Vec<String>,
    pub emails: Vec<String>,
    pub loyalty_numbers: Vec<String>,
    pub logins: Vec<String>,
    /// Request tokens, app and user access tokens, refresh tokens: every one issued.
    pub tokens: Vec<String>,
    /// The app's client secret.
    pub client_secrets: Vec<String>,
}

impl World {
    /// What [`Secrets`] lists, for every user and every token issued so far.
    pub fn secrets(&self) -> Secrets {
        let mut secrets = Secrets::default();
        for user in &self.users {
            secrets.names.push(user.first_name.clone());
            secrets.names.extend(user.middle_name.clone());
            secrets.names.push(user.last_name.clone());
            secrets.emails.extend(user.emails.iter().cloned());
            secrets.loyalty_numbers.extend(user.loyalty_number.clone());
            secrets.logins.push(user.login_id.clone());
        }
        secrets.tokens.extend(self.request_tokens.keys().cloned());
        secrets.tokens.extend(self.access_tokens.keys().cloned());
        secrets.tokens.extend(self.refresh_tokens.keys().cloned());
        secrets
    }
}

/// A v4 UUID drawn from `rng` (deterministic for a seeded RNG).
pub fn uuid_from(rng: &mut impl RngCore) -> Uuid {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    uuid::Builder::from_random_bytes(b).into_uuid()
}

fn opaque_token(rng: &mut impl RngCore, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Shortens a secret for logs: first 4 characters and the length.
pub fn mask(token: &str) -> String {
    let head: String = token.chars().take(4).collect();
    format!("{head}…({})", token.len())
}

impl World {
    pub fn new(rules: Rules, rng_seed: u64) -> Self {
        Self {
            rules,
            users: Vec::new(),
            requests: Vec::new(),
            index: HashMap::new(),
            request_tokens: HashMap::new(),
            access_tokens: HashMap::new(),
            refresh_tokens: HashMap::new(),
            expectations: Vec::new(),
            seq: 0,
            rng: StdRng::seed_from_u64(rng_seed),
        }
    }

    /// A fresh random id from the world's RNG.
    pub fn new_id(&mut self) -> Uuid {
        uuid_from(&mut self.rng)
    }

    pub fn user(&self, id: Uuid) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    pub fn user_by_login(&self, login: &str) -> Option<&User> {
        self.users
            .iter()
            .find(|u| u.login_id.eq_ignore_ascii_case(login.trim()))
    }

    pub fn add_user(&mut self, user: User) {
        self.users.push(user);
    }

    pub fn request(&self, id: Uuid) -> Option<&ConnRequest> {
        self.index.get(&id).and_then(|&i| self.requests.get(i))
    }

    fn request_mut(&mut self, id: Uuid) -> Option<&mut ConnRequest> {
        match self.index.get(&id) {
            Some(&i) => self.requests.get_mut(i),
            None => None,
        }
    }

    /// Creates a pending request for `user_id` with id `id` (or a fresh one).
    /// Refuses when the user already has one pending, in flight or waiting.
    pub fn create_request(
        &mut self,
        user_id: Uuid,
        id: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> Result<Uuid, QueueError> {
        if self.user(user_id).is_none() {
            return Err(QueueError::NotFound);
        }
        self.promote(now);
        if self.requests.iter().any(|r| {
            r.user_id == user_id && (r.state.outstanding() || r.state == CrState::RequeuedWaiting)
        }) {
            return Err(QueueError::AlreadyPending);
        }
        let id = match id {
            Some(id) => id,
            None => self.new_id(),
        };
        self.seq += 1;
        let r = ConnRequest {
            id,
            user_id,
            state: CrState::Pending,
            attempt: 1,
            creu_count: 0,
            crret_count: 0,
            created_at: now,
            last_modified: now,
            visible_since: now,
            seq: self.seq,
            requeue_at: None,
            current_token: None,
            tokens_issued: 0,
            get_count: 0,
            history: Vec::new(),
            exchanges: Vec::new(),
            exchange_attempts: Vec::new(),
        };
        self.index.insert(id, self.requests.len());
        self.requests.push(r);
        Ok(id)
    }

    /// Brings back every requeued request whose time has come.
    pub fn promote(&mut self, now: DateTime<Utc>) {
        for r in &mut self.requests {
            if r.state == CrState::RequeuedWaiting {
                if let Some(at) = r.requeue_at {
                    if at <= now {
                        r.state = CrState::Pending;
                        r.attempt += 1;
                        r.visible_since = at;
                        r.last_modified = at;
                        r.requeue_at = None;
                        r.current_token = None;
                    }
                }
            }
        }
    }

    /// The queue: every outstanding request, oldest first (FIFO).
    pub fn queue(&mut self, now: DateTime<Utc>) -> Vec<Uuid> {
        self.promote(now);
        let mut v: Vec<&ConnRequest> = self
            .requests
            .iter()
            .filter(|r| r.state.outstanding())
            .collect();
        v.sort_by_key(|r| (r.visible_since, r.seq));
        v.into_iter().map(|r| r.id).collect()
    }

    /// Issues a fresh request token for an outstanding request (a GET returned it).
    /// Earlier tokens keep working until they expire or one of them is exchanged, unless
    /// `supersede_request_tokens` is set: then they stop working now.
    pub fn issue_request_token(&mut self, id: Uuid, now: DateTime<Utc>) -> Option<String> {
        let token = opaque_token(&mut self.rng, 32);
        let ttl = self.rules.request_token_ttl;
        let supersede = self.rules.supersede_request_tokens;
        if supersede && self.request(id).is_some_and(|r| r.state.outstanding()) {
            for t in self.request_tokens.values_mut() {
                if t.request_id == id {
                    t.used = true;
                }
            }
        }
        let r = self.request_mut(id)?;
        if !r.state.outstanding() {
            return r.current_token.clone();
        }
        r.state = CrState::InFlight;
        r.current_token = Some(token.clone());
        r.tokens_issued += 1;
        r.get_count += 1;
        let info = RequestToken {
            request_id: r.id,
            user_id: r.user_id,
            attempt: r.attempt,
            expires_at: now + Duration::seconds(ttl),
            used: false,
            number: r.tokens_issued,
        };
        self.request_tokens.insert(token.clone(), info);
        Some(token)
    }

    /// Applies a PUT. `Ok(state_after)` when accepted; the PUT is recorded either way.
    pub fn put_status(
        &mut self,
        id: Uuid,
        status: PutStatus,
        version: &str,
        now: DateTime<Utc>,
    ) -> Result<CrState, QueueError> {
        self.promote(now);
        let rules = self.rules.clone();
        let Some(r) = self.request_mut(id) else {
            return Err(QueueError::NotFound);
        };
        if !r.state.outstanding() {
            let state = r.state;
            r.history.push(PutRecord {
                at: rfc3339(now),
                status: status.as_str().to_string(),
                attempt: r.attempt,
                accepted: false,
                http_status: 404,
                version: version.to_string(),
                state_after: state,
            });
            return Err(QueueError::NotOutstanding(state));
        }
        match status {
            PutStatus::CRSUC => {
                r.state = CrState::Connected;
            }
            PutStatus::CREU1 | PutStatus::CREU2 | PutStatus::CREU3 => {
                r.creu_count += 1;
                if r.creu_count > rules.creu_max_requeues {
                    r.state = CrState::FailedFinal;
                } else {
                    r.state = CrState::RequeuedWaiting;
                    r.requeue_at = Some(now + Duration::seconds(rules.creu_delay));
                }
            }
            PutStatus::CRRET | PutStatus::CRPA1 | PutStatus::CRPA2 => {
                r.crret_count += 1;
                if r.crret_count > rules.crret_max_requeues {
                    r.state = CrState::FailedFinal;
                } else {
                    r.state = CrState::RequeuedWaiting;
                    r.requeue_at = Some(now + Duration::seconds(rules.crret_delay));
                }
            }
        }
        r.last_modified = now;
        let state = r.state;
        r.history.push(PutRecord {
            at: rfc3339(now),
            status: status.as_str().to_string(),
            attempt: r.attempt,
            accepted: true,
            http_status: 204,
            version: version.to_string(),
            state_after: state,
        });
        Ok(state)
    }

    /// Exchanges a request token (password grant, `credtype=authtoken`).
    /// On success every token of that request becomes used.
    pub fn exchange_request_token(
        &mut self,
        token: &str,
        username: &str,
        now: DateTime<Utc>,
    ) -> Result<Uuid, ExchangeError> {
        let Some(info) = self.request_tokens.get(token).cloned() else {
            return Err(ExchangeError::BadOrExpired);
        };
        let result = if info.used || info.expires_at <= now {
            Err(ExchangeError::BadOrExpired)
        } else if !username
            .trim()
            .eq_ignore_ascii_case(&info.user_id.to_string())
        {
            Err(ExchangeError::NotForYou)
        } else {
            Ok(())
        };
        if let Some(r) = self.request_mut(info.request_id) {
            r.exchange_attempts.push(ExchangeAttempt {
                at: rfc3339(now),
                attempt: info.attempt,
                token_number: info.number,
                ok: result.is_ok(),
            });
        }
        result?;
        for t in self.request_tokens.values_mut() {
            if t.request_id == info.request_id {
                t.used = true;
            }
        }
        if let Some(r) = self.request_mut(info.request_id) {
            r.exchanges.push(ExchangeRecord {
                at: rfc3339(now),
                attempt: info.attempt,
            });
        }
        Ok(info.user_id)
    }

    /// Issues an access token.
    pub fn issue_access_token(&mut self, principal: Principal, now: DateTime<Utc>) -> String {
        let token = format!("sbx{}", opaque_token(&mut self.rng, 45));
        let ttl = self.rules.access_token_ttl;
        self.access_tokens.insert(
            token.clone(),
            AccessToken {
                principal,
                expires_at: now + Duration::seconds(ttl),
            },
        );
        token
    }

    /// Issues a refresh token for a user.
    pub fn issue_refresh_token(&mut self, user_id: Uuid, now: DateTime<Utc>) -> String {
        let token = opaque_token(&mut self.rng, 30);
        let ttl = self.rules.refresh_token_ttl;
        self.refresh_tokens.insert(
            token.clone(),
            RefreshToken {
                user_id,
                expires_at: now + Duration::seconds(ttl),
                revoked: false,
            },
        );
        token
    }

    /// Uses a refresh token: it stops working, the user id is returned.
    pub fn consume_refresh_token(&mut self, token: &str, now: DateTime<Utc>) -> Option<Uuid> {
        let rt = self.refresh_tokens.get_mut(token)?;
        if rt.revoked || rt.expires_at <= now {
            return None;
        }
        rt.revoked = true;
        Some(rt.user_id)
    }

    /// Revokes every refresh token of a user; returns how many were live.
    pub fn revoke_user(&mut self, user_id: Uuid) -> usize {
        let mut n = 0;
        for rt in self.refresh_tokens.values_mut() {
            if rt.user_id == user_id && !rt.revoked {
                rt.revoked = true;
                n += 1;
            }
        }
        n
    }
}
