//! Logs and metrics.
//!
//! * Logs are JSON lines on stdout (CloudWatch reads them), one object per event, with
//!   the fields of the current span — the Lambda runtime's span carries the request id.
//!   `RUST_LOG` sets the level (default `info`).
//! * Metrics are CloudWatch Embedded Metric Format (EMF) lines: a JSON object with an
//!   `_aws` block that CloudWatch turns into metrics, no API call needed.

use std::io::Write;

use serde_json::{json, Map, Value};
use tracing_subscriber::EnvFilter;

/// Install the JSON log subscriber (once; later calls are ignored).
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_ansi(false)
        .try_init();
}

/// A metric's unit, as EMF spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Milliseconds => "Milliseconds",
        }
    }
}

/// Writes EMF lines for one service (`poller`, `worker`) in one namespace.
#[derive(Debug, Clone)]
pub struct Metrics {
    namespace: String,
    service: String,
    enabled: bool,
    /// Totals per metric name, when kept ([`Metrics::tallied`]).
    tally: Option<std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, f64>>>>,
}

impl Metrics {
    /// The namespace comes from `METRICS_NAMESPACE` (default `TripLink`).
    pub fn new(namespace: impl Into<String>, service: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            service: service.into(),
            enabled: true,
            tally: None,
        }
    }

    /// Metrics that are not printed but added up per name (local tools that show them).
    pub fn tallied(service: impl Into<String>) -> Self {
        Self {
            tally: Some(Default::default()),
            ..Self::disabled(service)
        }
    }

    /// The totals so far of a [`Metrics::tallied`] instance (empty otherwise).
    pub fn totals(&self) -> std::collections::BTreeMap<String, f64> {
        self.tally
            .as_ref()
            .map(|t| t.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default()
    }

    /// Metrics that are computed but not printed (local tools that own stdout).
    pub fn disabled(service: impl Into<String>) -> Self {
        Self {
            enabled: false,
            ..Self::new("TripLink", service)
        }
    }

    /// The EMF document for `values` (dimension `Service`), with extra `properties`
    /// (searchable in Logs Insights, not metrics). Personal data never goes here.
    pub fn document(
        &self,
        timestamp_ms: i64,
        values: &[(&str, f64, Unit)],
        properties: Map<String, Value>,
    ) -> Value {
        let definitions: Vec<Value> = values
            .iter()
            .map(|(name, _, unit)| json!({ "Name": name, "Unit": unit.as_str() }))
            .collect();
        let mut document = properties;
        document.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": [["Service"]],
                    "Metrics": definitions,
                }],
            }),
        );
        document.insert("Service".into(), Value::String(self.service.clone()));
        for (name, value, _) in values {
            document.insert((*name).to_owned(), json!(value));
        }
        Value::Object(document)
    }

    /// Print one EMF line to stdout.
    pub fn emit(&self, values: &[(&str, f64, Unit)], properties: Map<String, Value>) {
        if let Some(tally) = &self.tally {
            let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
            for (name, value, _) in values {
                *tally.entry((*name).to_owned()).or_default() += value;
            }
        }
        if !self.enabled {
            return;
        }
        let line = self.document(chrono::Utc::now().timestamp_millis(), values, properties);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallied_metrics_add_up_per_name() {
        let metrics = Metrics::tallied("worker");
        let clone = metrics.clone();
        metrics.emit(&[("Released", 1.0, Unit::Count)], Map::new());
        clone.emit(
            &[
                ("Released", 1.0, Unit::Count),
                ("DirectoryNotReady", 1.0, Unit::Count),
            ],
            Map::new(),
        );
        let totals = metrics.totals();
        assert_eq!(totals.get("Released"), Some(&2.0));
        assert_eq!(totals.get("DirectoryNotReady"), Some(&1.0));
        assert!(Metrics::disabled("worker").totals().is_empty());
    }

    #[test]
    fn emf_documents_declare_every_metric() {
        let metrics = Metrics::new("TripLink", "poller");
        let mut props = Map::new();
        props.insert("stop_reason".into(), json!("drained"));
        let doc = metrics.document(
            1_700_000_000_000,
            &[
                ("Polled", 35.0, Unit::Count),
                ("PollDurationMs", 812.0, Unit::Milliseconds),
            ],
            props,
        );
        assert_eq!(doc["_aws"]["Timestamp"], 1_700_000_000_000i64);
        let block = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(block["Namespace"], "TripLink");
        assert_eq!(block["Dimensions"], json!([["Service"]]));
        assert_eq!(
            block["Metrics"][0],
            json!({"Name": "Polled", "Unit": "Count"})
        );
        assert_eq!(block["Metrics"][1]["Unit"], "Milliseconds");
        assert_eq!(doc["Service"], "poller");
        assert_eq!(doc["Polled"], 35.0);
        assert_eq!(doc["stop_reason"], "drained");
    }
}
