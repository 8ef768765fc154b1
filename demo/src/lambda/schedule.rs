//! An EventBridge schedule (`Type: Schedule` event) invoking a function with the
//! scheduled event EventBridge sends, every `interval`. The function's reserved
//! concurrency applies: a tick that finds every reserved execution busy is throttled
//! and counted as skipped (see the report for how this differs from Lambda's
//! asynchronous queue).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use super::lock;
use super::process::{LambdaFunction, Outcome};
use super::template::{FunctionSpec, StackSettings};

#[derive(Debug, thiserror::Error)]
#[error("schedule {event} of {function}: {message}")]
pub struct ScheduleError {
    function: String,
    event: String,
    message: String,
}

#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// The template's expression (`rate(1 minute)`, `cron(...)`).
    pub expression: String,
    pub enabled: bool,
    pub interval: Duration,
    pub rule_arn: String,
    pub region: String,
    pub account_id: String,
}

/// `rate(N unit)` as a duration (`cron(...)` has no fixed interval).
pub fn rate(expression: &str) -> Option<Duration> {
    let inner = expression.trim().strip_prefix("rate(")?.strip_suffix(')')?;
    let (n, unit) = inner.trim().split_once(' ')?;
    let n: u64 = n.parse().ok()?;
    let seconds = match unit.trim() {
        "minute" | "minutes" => 60,
        "hour" | "hours" => 3600,
        "day" | "days" => 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(n * seconds))
}

impl ScheduleConfig {
    /// The `Type: Schedule` event `event`; `interval` replaces the expression's period
    /// (tests run the schedule faster than `rate(1 minute)`).
    pub fn from_template(
        spec: &FunctionSpec,
        event: &str,
        stack: &StackSettings,
        interval: Option<Duration>,
    ) -> Result<Self, ScheduleError> {
        let fail = |message: String| ScheduleError {
            function: spec.logical_id.clone(),
            event: event.to_owned(),
            message,
        };
        let declared = spec
            .events
            .get(event)
            .ok_or_else(|| fail("no such event".into()))?;
        if declared.kind != "Schedule" {
            return Err(fail(format!("a {} event, not Schedule", declared.kind)));
        }
        let expression = declared
            .properties
            .get("Schedule")
            .and_then(Value::as_str)
            .ok_or_else(|| fail("no Schedule".into()))?
            .to_owned();
        let enabled = declared
            .properties
            .get("State")
            .and_then(Value::as_str)
            .is_none_or(|s| s == "ENABLED");
        let interval = match interval {
            Some(interval) => interval,
            None => {
                rate(&expression).ok_or_else(|| fail(format!("{expression}: give an interval")))?
            }
        };
        Ok(Self {
            rule_arn: format!(
                "arn:aws:events:{}:{}:rule/{}-{}{}-LOCAL",
                stack.region, stack.account_id, stack.stack_name, spec.logical_id, event
            ),
            expression,
            enabled,
            interval,
            region: stack.region.clone(),
            account_id: stack.account_id.clone(),
        })
    }

    /// The event EventBridge sends for a scheduled rule.
    pub fn event(&self) -> Value {
        json!({
            "version": "0",
            "id": uuid::Uuid::new_v4().to_string(),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": self.account_id,
            "time": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
            "region": self.region,
            "resources": [self.rule_arn],
            "detail": {}
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleStats {
    pub ticks: u64,
    /// Ticks throttled by the reserved concurrency.
    pub skipped: u64,
    pub successes: u64,
    pub failures: u64,
    /// The last successful response.
    pub last_response: Option<Value>,
}

/// A running schedule; stopped when dropped.
pub struct Scheduler {
    stats: Arc<Mutex<ScheduleStats>>,
    task: tokio::task::JoinHandle<()>,
}

impl Scheduler {
    pub fn start(config: ScheduleConfig, function: Arc<LambdaFunction>) -> Self {
        let stats = Arc::new(Mutex::new(ScheduleStats::default()));
        let task_stats = stats.clone();
        let task = tokio::spawn(async move {
            if !config.enabled {
                return;
            }
            let mut ticks = tokio::time::interval(config.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut invocations = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = ticks.tick() => {
                        lock(&task_stats).ticks += 1;
                        let function = function.clone();
                        let stats = task_stats.clone();
                        let event = Bytes::from(config.event().to_string());
                        invocations.spawn(async move {
                            let invocation = function.invoke(event).await;
                            let mut stats = lock(&stats);
                            match invocation.outcome {
                                Outcome::Throttled => stats.skipped += 1,
                                Outcome::Success(body) => {
                                    stats.successes += 1;
                                    stats.last_response = serde_json::from_slice(&body).ok();
                                }
                                _ => stats.failures += 1,
                            }
                        });
                    }
                    Some(_) = invocations.join_next(), if !invocations.is_empty() => {}
                }
            }
        });
        Self { stats, task }
    }

    pub fn stats(&self) -> ScheduleStats {
        lock(&self.stats).clone()
    }

    /// Stop ticking; an invocation in progress is cancelled (its process killed).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(rate("rate(1 minute)"), Some(Duration::from_secs(60)));
        assert_eq!(rate("rate(5 minutes)"), Some(Duration::from_secs(300)));
        assert_eq!(rate("rate(2 hours)"), Some(Duration::from_secs(7200)));
        assert_eq!(rate("cron(0 12 * * ? *)"), None);
    }
}
