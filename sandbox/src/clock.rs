//! The sandbox's virtual clock.
//!
//! Every time the sandbox reasons about (token expiry, requeue delays,
//! `lastModified`) comes from this clock. It is the real wall clock shifted
//! by an offset that `POST /_sandbox/clock/advance` grows; with
//! `--frozen-clock` the real time does not flow at all, so only `advance`
//! moves it (fully deterministic tests).

use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};

/// A clock that tests can move forward.
#[derive(Debug)]
pub struct VirtualClock {
    start: DateTime<Utc>,
    started: Instant,
    frozen: bool,
    offset_ms: Mutex<i64>,
}

impl VirtualClock {
    /// A clock reading `start` now. When `frozen`, it only moves on [`advance`](Self::advance).
    pub fn new(start: DateTime<Utc>, frozen: bool) -> Self {
        Self {
            start,
            started: Instant::now(),
            frozen,
            offset_ms: Mutex::new(0),
        }
    }

    fn offset(&self) -> i64 {
        match self.offset_ms.lock() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        }
    }

    /// The current virtual time.
    pub fn now(&self) -> DateTime<Utc> {
        let real = if self.frozen {
            0
        } else {
            i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX / 4)
        };
        self.start + Duration::milliseconds(real.saturating_add(self.offset()))
    }

    /// Moves the clock forward by `seconds` (negative values are refused by the caller).
    pub fn advance(&self, seconds: i64) -> DateTime<Utc> {
        {
            let mut g = match self.offset_ms.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            *g = g.saturating_add(seconds.saturating_mul(1000));
        }
        self.now()
    }

    /// Total seconds added by `advance` so far.
    pub fn offset_seconds(&self) -> i64 {
        self.offset() / 1000
    }

    /// Whether real time is ignored.
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }
}

/// `YYYY-MM-DDTHH:MM:SS`, no zone: the format of `lastModified` on the v3.2 page.
pub fn concur_timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// RFC 3339 with a `Z`, for the admin API.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
