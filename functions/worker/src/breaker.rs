//! The circuit breaker: systemic failures are not the traveller's problem.
//!
//! When Concur, its token endpoint, the member directory or DynamoDB is down, every
//! request of a batch fails for the same technical reason. Each such request is already
//! left pending without a status (`decision::Leave`), but trying every one of them still
//! hammers a failing service, spends re-drives (each item has [`MAX_REDRIVES`]
//! (triplink_shared::store::lifecycle::MAX_REDRIVES) before it is parked) and could
//! still reach a status through a half-working path. The breaker stops that.
//!
//! ## Rule
//!
//! * Every finished record is an [`Outcome`]: a success (a status Concur took), a
//!   systemic failure with its [`Cause`], or neutral (busy, ignored, a refusal about
//!   one request's own token, a deadline).
//! * The breaker keeps the last [`WINDOW`] non-neutral outcomes of this execution
//!   environment. When at least [`MIN_FAILURES`] of them, and at least half, are
//!   systemic failures with the same cause, it **opens** for [`COOL_DOWN`].
//! * While open, a claimed request is released at once (reason `breaker_open`, due
//!   again when the breaker closes; no status, no Concur call, no directory call).
//! * When the cool-down ends the breaker is **half-open**: requests pass; the first
//!   outcome decides. A success closes it; a systemic failure re-opens it for twice the
//!   previous cool-down, up to [`MAX_COOL_DOWN`].
//! * Each opening is logged at `error` with its cause and emits the `BreakerOpened`
//!   metric (alarm `breaker-open`).
//!
//! The breaker lives per execution environment (one per concurrent worker instance):
//! each instance learns of an outage from its own few failures, which bounds the damage
//! to [`MIN_FAILURES`] requests per instance per cool-down.

use std::collections::VecDeque;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

/// Outcomes remembered.
pub const WINDOW: usize = 10;
/// Failures with one cause needed to open.
pub const MIN_FAILURES: usize = 5;
/// The first opening's length (the HTTP status codes page's five minutes).
pub const COOL_DOWN: Duration = Duration::minutes(5);
/// The longest opening.
pub const MAX_COOL_DOWN: Duration = Duration::minutes(30);

/// What failed, system-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// Concur's API (list, get, PUT): 5xx, timeouts, broken connections.
    Concur,
    /// Concur's token endpoint did not answer the exchange.
    TokenEndpoint,
    /// Concur refused the app's own credentials (client id/secret, company not enabled).
    AppCredentials,
    /// The member directory.
    Directory,
    /// DynamoDB or KMS (the requests table, the vault).
    Store,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Concur => "concur",
            Self::TokenEndpoint => "token_endpoint",
            Self::AppCredentials => "app_credentials",
            Self::Directory => "directory",
            Self::Store => "store",
        }
    }
}

/// One finished record, as the breaker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Systemic(Cause),
    Neutral,
}

/// The breaker just opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub cause: Cause,
    pub until: DateTime<Utc>,
    /// Openings in a row (1 for the first).
    pub openings: u32,
}

#[derive(Default)]
struct State {
    recent: VecDeque<Option<Cause>>,
    open_until: Option<DateTime<Utc>>,
    cause: Option<Cause>,
    /// Openings since the last close.
    openings: u32,
}

/// The breaker (see the module documentation).
#[derive(Default)]
pub struct Breaker {
    state: Mutex<State>,
}

impl Breaker {
    /// While open: until when, and why.
    pub fn open(&self, now: DateTime<Utc>) -> Option<(DateTime<Utc>, Cause)> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match (state.open_until, state.cause) {
            (Some(until), Some(cause)) if now < until => Some((until, cause)),
            _ => None,
        }
    }

    /// Count one outcome; `Some` when this outcome opened the breaker.
    pub fn record(&self, now: DateTime<Utc>, outcome: Outcome) -> Option<Opened> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.open_until.is_some_and(|until| now < until) {
            // Outcomes of requests started before the opening change nothing.
            return None;
        }
        let half_open = state.open_until.is_some();
        let cause = match outcome {
            Outcome::Neutral => return None,
            Outcome::Success => {
                if half_open {
                    *state = State::default();
                } else {
                    push(&mut state.recent, None);
                }
                return None;
            }
            Outcome::Systemic(cause) => cause,
        };
        let trips = if half_open {
            true
        } else {
            push(&mut state.recent, Some(cause));
            let same = state.recent.iter().filter(|c| **c == Some(cause)).count();
            same >= MIN_FAILURES && same * 2 >= state.recent.len()
        };
        if !trips {
            return None;
        }
        let factor = 1i32 << state.openings.min(8);
        let length = (COOL_DOWN * factor).min(MAX_COOL_DOWN);
        state.openings += 1;
        state.open_until = Some(now + length);
        state.cause = Some(cause);
        state.recent.clear();
        Some(Opened {
            cause,
            until: now + length,
            openings: state.openings,
        })
    }
}

fn push(recent: &mut VecDeque<Option<Cause>>, entry: Option<Cause>) {
    if recent.len() == WINDOW {
        recent.pop_front();
    }
    recent.push_back(entry);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap_or_default()
    }

    #[test]
    fn five_failures_of_one_cause_open_it_and_it_backs_off() {
        let breaker = Breaker::default();
        for i in 0..MIN_FAILURES - 1 {
            assert_eq!(
                breaker.record(at(i as i64), Outcome::Systemic(Cause::Concur)),
                None
            );
        }
        assert_eq!(breaker.open(at(10)), None);
        let opened = breaker
            .record(at(10), Outcome::Systemic(Cause::Concur))
            .expect("opens on the fifth");
        assert_eq!(opened.until, at(10) + COOL_DOWN);
        assert_eq!(
            breaker.open(at(11)),
            Some((at(10) + COOL_DOWN, Cause::Concur))
        );
        // Late outcomes of requests started before the opening change nothing.
        assert_eq!(
            breaker.record(at(12), Outcome::Systemic(Cause::Concur)),
            None
        );
        // Half-open: one failure re-opens it for twice as long.
        let half_open = at(10) + COOL_DOWN;
        assert_eq!(breaker.open(half_open), None);
        let again = breaker
            .record(half_open, Outcome::Systemic(Cause::Store))
            .expect("re-opens");
        assert_eq!(again.until, half_open + COOL_DOWN * 2);
        assert_eq!((again.cause, again.openings), (Cause::Store, 2));
        // Half-open again: one success closes it and resets the back-off.
        let later = again.until;
        assert_eq!(breaker.record(later, Outcome::Success), None);
        assert_eq!(breaker.open(later), None);
        for i in 0..MIN_FAILURES as i64 - 1 {
            assert_eq!(
                breaker.record(later, Outcome::Systemic(Cause::Directory)),
                None,
                "{i}"
            );
        }
        let fresh = breaker
            .record(later, Outcome::Systemic(Cause::Directory))
            .expect("opens again after five");
        assert_eq!(fresh.until, later + COOL_DOWN);
    }

    #[test]
    fn mixed_causes_and_successes_keep_it_closed() {
        let breaker = Breaker::default();
        let causes = [Cause::Concur, Cause::Store, Cause::Directory];
        for i in 0..30 {
            let outcome = if i % 2 == 0 {
                Outcome::Success
            } else {
                Outcome::Systemic(causes[i % 3])
            };
            assert_eq!(breaker.record(at(i as i64), outcome), None, "{i}");
            assert_eq!(breaker.record(at(i as i64), Outcome::Neutral), None);
        }
    }

    proptest! {
        /// Never opens unless the window really holds MIN_FAILURES failures of the
        /// opening cause, at least half of it; never opens for longer than the cap.
        #[test]
        fn opens_only_on_evidence(outcomes in prop::collection::vec(0u8..5, 0..200)) {
            let breaker = Breaker::default();
            let mut window: VecDeque<Option<Cause>> = VecDeque::new();
            let mut now = at(0);
            for code in outcomes {
                now += Duration::seconds(7);
                let outcome = match code {
                    0 => Outcome::Success,
                    1 => Outcome::Neutral,
                    2 => Outcome::Systemic(Cause::Concur),
                    3 => Outcome::Systemic(Cause::Store),
                    _ => Outcome::Systemic(Cause::TokenEndpoint),
                };
                let was_open = breaker.open(now).is_some();
                let half_open = !was_open && breaker.state.lock().unwrap().open_until.is_some();
                if !was_open && !half_open {
                    match outcome {
                        Outcome::Success => push(&mut window, None),
                        Outcome::Systemic(c) => push(&mut window, Some(c)),
                        Outcome::Neutral => {}
                    }
                }
                if let Some(opened) = breaker.record(now, outcome) {
                    prop_assert!(!was_open);
                    prop_assert!(opened.until - now <= MAX_COOL_DOWN);
                    prop_assert!(opened.until - now >= COOL_DOWN);
                    if !half_open {
                        let same = window.iter().filter(|c| **c == Some(opened.cause)).count();
                        prop_assert!(same >= MIN_FAILURES && same * 2 >= window.len());
                    }
                    window.clear();
                } else if half_open && outcome == Outcome::Success {
                    window.clear();
                }
            }
        }
    }
}
