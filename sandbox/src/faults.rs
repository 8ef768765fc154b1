//! Fault injection: rules that make chosen routes slow, failing or broken.
//!
//! Grammar of one rule (CLI `--fault`, and the strings of `POST /_sandbox/faults`):
//!
//! ```text
//! ROUTE:KIND[:OPTION]...
//! ROUTE   = token | authtoken | list | get | put | create | revoke | any
//! KIND    = latency=MS | 429 | 500 | 503 | 500-after | 503-after | drop | drop-after
//!         | slow=MS | malformed | error200 | xml | poison | elsewhere
//! OPTION  = next=N | p=PROBABILITY | for=SECONDS | retry-after=SECONDS
//! ```
//!
//! Without `next`, `p` or `for` a rule fires on every matching call. `next=N` fires on
//! the next N matching calls, then the rule is spent. `p=0.25` fires with that
//! probability, drawn from an RNG seeded with `--fault-seed`, so a sequential
//! client sees the same faults on every run. `for=S` fires on every matching call
//! for S seconds of the sandbox clock from the first call it fired on (a maintenance
//! window: `put:503:for=300`), then the rule is spent. `latency` rules add up and let
//! the call go on; the first other rule that fires decides the call's fate.
//!
//! `authtoken` is the token route's password grants with `credtype=authtoken` (the
//! request-token exchange); `token` rules apply to them as well. `elsewhere` answers
//! the token endpoint's OAuth2 error code 16 ("user lives elsewhere") with the
//! sandbox's own geolocation, without processing the grant.

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Which calls a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteSel {
    /// `POST /oauth2/v0/token`
    Token,
    /// `POST /oauth2/v0/token` with `grant_type=password&credtype=authtoken`.
    Authtoken,
    /// `GET .../connectionrequests/`
    List,
    /// `GET .../connectionrequests/{id}`
    Get,
    /// `PUT .../connectionrequests/{id}`
    Put,
    /// `POST .../connectionrequests/?user=`
    Create,
    /// `DELETE /app-mgmt/v0/connections`
    Revoke,
    /// Every non-admin call.
    Any,
}

impl RouteSel {
    /// Does a rule on `self` apply to a call on `call`?
    fn covers(self, call: RouteSel) -> bool {
        self == Self::Any || self == call || (self == Self::Token && call == Self::Authtoken)
    }
}

impl RouteSel {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "token" => Self::Token,
            "authtoken" => Self::Authtoken,
            "list" => Self::List,
            "get" => Self::Get,
            "put" => Self::Put,
            "create" => Self::Create,
            "revoke" => Self::Revoke,
            "any" | "*" => Self::Any,
            _ => return None,
        })
    }
}

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FaultKind {
    /// Wait this long before handling the call.
    Latency { ms: u64 },
    /// 429 with `Retry-After` (seconds), call not processed.
    TooManyRequests { retry_after: u64 },
    /// This status (500 or 503) with the Error body; `after`: the call is
    /// processed first and its real answer replaced. `retry_after` (seconds)
    /// adds a `Retry-After` header when the rule gave one.
    Status {
        code: u16,
        after: bool,
        retry_after: Option<u64>,
    },
    /// The TCP connection is closed without a complete response; `after`: the
    /// call is processed first.
    Drop { after: bool },
    /// The real response, its body trickled out over this many milliseconds.
    SlowBody { ms: u64 },
    /// HTTP 200 with a truncated JSON body (call processed).
    MalformedJson,
    /// HTTP 200 whose body is the Error element (call not processed).
    Error200,
    /// The call is answered in XML although it asked for JSON.
    XmlDespiteJson,
    /// A JSON page with items a client cannot fully read (call processed): its first
    /// real item gets an unknown `status` and an unreadable `lastModified`, and two
    /// unreadable items are put before it (`ID` `poison-malformed` with an object as
    /// `lastName`, and one without an `ID`).
    Poison,
    /// HTTP 400, OAuth2 code 16 "user lives elsewhere" with the sandbox's
    /// geolocation (token routes only; the grant is not processed).
    Elsewhere,
}

/// When a rule fires.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Always,
    /// On the next N matching calls (the number left).
    Next(u32),
    Probability(f64),
    /// For this many seconds of the sandbox clock from the first call it fired on
    /// (`until` is set then).
    Window {
        seconds: i64,
        until: Option<DateTime<Utc>>,
    },
}

/// One fault rule.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRule {
    /// The rule as written.
    pub spec: String,
    pub route: RouteSel,
    #[serde(flatten)]
    pub kind: FaultKind,
    pub trigger: Trigger,
    /// How many calls it fired on.
    pub hits: u64,
}

impl FaultRule {
    /// Parses `ROUTE:KIND[:OPTION]...`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        let mut parts = spec.split(':');
        let route_s = parts.next().unwrap_or_default();
        let route = RouteSel::parse(route_s).ok_or_else(|| {
            format!("fault {spec:?}: unknown route {route_s:?} (token, authtoken, list, get, put, create, revoke, any)")
        })?;
        let kind_s = parts
            .next()
            .ok_or_else(|| format!("fault {spec:?}: missing kind"))?
            .to_ascii_lowercase();
        let mut trigger = Trigger::Always;
        let mut retry_after: Option<u64> = None;
        for opt in parts {
            let (k, v) = opt
                .split_once('=')
                .ok_or_else(|| format!("fault {spec:?}: option {opt:?} is not key=value"))?;
            match k.to_ascii_lowercase().as_str() {
                "next" => {
                    let n: u32 = v
                        .parse()
                        .map_err(|_| format!("fault {spec:?}: next must be a count"))?;
                    trigger = Trigger::Next(n);
                }
                "p" => {
                    let p: f64 = v
                        .parse()
                        .map_err(|_| format!("fault {spec:?}: p must be a number"))?;
                    if !(0.0..=1.0).contains(&p) {
                        return Err(format!("fault {spec:?}: p must be in [0, 1]"));
                    }
                    trigger = Trigger::Probability(p);
                }
                "for" => {
                    let seconds: i64 = v
                        .parse()
                        .ok()
                        .filter(|s| *s > 0)
                        .ok_or_else(|| format!("fault {spec:?}: for must be seconds (> 0)"))?;
                    trigger = Trigger::Window {
                        seconds,
                        until: None,
                    };
                }
                "retry-after" => {
                    retry_after = Some(
                        v.parse()
                            .map_err(|_| format!("fault {spec:?}: retry-after must be seconds"))?,
                    );
                }
                other => return Err(format!("fault {spec:?}: unknown option {other:?}")),
            }
        }
        let num = |v: &str| -> Result<u64, String> {
            v.parse()
                .map_err(|_| format!("fault {spec:?}: {v:?} is not a number of milliseconds"))
        };
        let kind = match kind_s.split_once('=') {
            Some(("latency", v)) => FaultKind::Latency { ms: num(v)? },
            Some(("slow", v)) => FaultKind::SlowBody { ms: num(v)? },
            Some(_) => return Err(format!("fault {spec:?}: unknown kind {kind_s:?}")),
            None => match kind_s.as_str() {
                "429" => FaultKind::TooManyRequests {
                    retry_after: retry_after.unwrap_or(1),
                },
                "500" => FaultKind::Status {
                    code: 500,
                    after: false,
                    retry_after,
                },
                "503" => FaultKind::Status {
                    code: 503,
                    after: false,
                    retry_after,
                },
                "500-after" => FaultKind::Status {
                    code: 500,
                    after: true,
                    retry_after,
                },
                "503-after" => FaultKind::Status {
                    code: 503,
                    after: true,
                    retry_after,
                },
                "drop" => FaultKind::Drop { after: false },
                "drop-after" => FaultKind::Drop { after: true },
                "malformed" => FaultKind::MalformedJson,
                "error200" => FaultKind::Error200,
                "xml" => FaultKind::XmlDespiteJson,
                "poison" => FaultKind::Poison,
                "elsewhere" if matches!(route, RouteSel::Token | RouteSel::Authtoken) => {
                    FaultKind::Elsewhere
                }
                "elsewhere" => {
                    return Err(format!(
                        "fault {spec:?}: elsewhere applies to the token or authtoken route only"
                    ))
                }
                _ => return Err(format!("fault {spec:?}: unknown kind {kind_s:?}")),
            },
        };
        Ok(Self {
            spec: spec.to_string(),
            route,
            kind,
            trigger,
            hits: 0,
        })
    }
}

/// The fault rules in force and their RNG.
#[derive(Debug)]
pub struct Faults {
    pub rules: Vec<FaultRule>,
    rng: StdRng,
}

/// What to do with one call.
#[derive(Debug, Default, Clone, Copy)]
pub struct Decision {
    pub latency_ms: u64,
    pub action: Option<FaultKind>,
}

impl Faults {
    pub fn new(seed: u64, rules: Vec<FaultRule>) -> Self {
        Self {
            rules,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Decides the faults for a call on `route` at `now` (sandbox clock); consumes
    /// `next=` counts and RNG draws, opens `for=` windows.
    pub fn decide(&mut self, route: Option<RouteSel>, now: DateTime<Utc>) -> Decision {
        let mut d = Decision::default();
        let Some(route) = route else {
            return d;
        };
        for rule in &mut self.rules {
            if !rule.route.covers(route) {
                continue;
            }
            let is_latency = matches!(rule.kind, FaultKind::Latency { .. });
            if d.action.is_some() && !is_latency {
                continue;
            }
            let fires = match &mut rule.trigger {
                Trigger::Always => true,
                Trigger::Next(n) => {
                    if *n > 0 {
                        *n -= 1;
                        true
                    } else {
                        false
                    }
                }
                Trigger::Probability(p) => self.rng.random::<f64>() < *p,
                Trigger::Window { seconds, until } => match until {
                    Some(until) => now < *until,
                    None => {
                        *until = Some(now + Duration::seconds(*seconds));
                        true
                    }
                },
            };
            if !fires {
                continue;
            }
            rule.hits += 1;
            match rule.kind {
                FaultKind::Latency { ms } => d.latency_ms = d.latency_ms.saturating_add(ms),
                k => d.action = Some(k),
            }
        }
        d
    }
}
