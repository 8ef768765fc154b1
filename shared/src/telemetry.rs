//! Logs and metrics.
//!
//! * Logs are JSON lines on stdout (CloudWatch reads them), one object per event, with
//!   the fields of the current span — the Lambda runtime's span carries the request id.
//!   `RUST_LOG` sets the level (default `info`).
//! * Metrics are CloudWatch Embedded Metric Format (EMF) lines: a JSON object with an
//!   `_aws` block that CloudWatch turns into metrics, no API call needed.

use std::io::Write;

use serde_json::{json, Map, Value};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Install the JSON log subscriber on stdout (once; later calls are ignored).
pub fn init_logging() {
    init_logging_to(std::io::stdout);
}

/// [`init_logging`]'s subscriber writing to `writer` instead of stdout: the same lines,
/// for local tools that capture what a function would print (`triplink-demo
/// --capture-logs`).
pub fn init_logging_to<W>(writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = json_subscriber(writer, filter).try_init();
}

/// The functions' log subscriber: JSON lines, the event's fields at the top level, the
/// current span's fields (a request's `request_id`) under `span`. [`init_logging_to`]
/// installs it process-wide; tests install it for a scope to read what a function
/// would print.
pub fn json_subscriber<W>(writer: W, filter: EnvFilter) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_ansi(false)
        .with_writer(writer)
        .finish()
}

/// Where lines go instead of stdout: [`Metrics::printing_to`] gives it each EMF line,
/// and as a tracing writer ([`init_logging_to`]) it gets each log line (one call per
/// line, without the newline). Events of the targets it skips are dropped.
#[derive(Clone)]
pub struct LineSink {
    write: std::sync::Arc<dyn Fn(&str) + Send + Sync>,
    skip_targets: Vec<String>,
}

impl LineSink {
    pub fn new(sink: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self {
            write: std::sync::Arc::new(sink),
            skip_targets: Vec::new(),
        }
    }

    /// Drop the log events of `target` and its modules (a crate sharing the process that
    /// a deployed function would not have: the Concur sandbox of `triplink-demo`).
    pub fn skipping_target(mut self, target: impl Into<String>) -> Self {
        self.skip_targets.push(target.into());
        self
    }

    fn skips(&self, target: &str) -> bool {
        self.skip_targets.iter().any(|skip| {
            target == skip
                || target
                    .strip_prefix(skip.as_str())
                    .is_some_and(|rest| rest.starts_with("::"))
        })
    }
}

impl std::fmt::Debug for LineSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineSink")
            .field("skip_targets", &self.skip_targets)
            .finish_non_exhaustive()
    }
}

/// One log event's bytes, handed to the sink line by line when the event is written.
pub struct LineWriter {
    sink: Option<LineSink>,
    buffer: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.sink.is_some() {
            self.buffer.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if let Some(sink) = &self.sink {
            for line in String::from_utf8_lossy(&self.buffer).lines() {
                (sink.write)(line);
            }
        }
    }
}

impl<'a> MakeWriter<'a> for LineSink {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            sink: Some(self.clone()),
            buffer: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LineWriter {
        LineWriter {
            sink: (!self.skips(meta.target())).then(|| self.clone()),
            buffer: Vec::new(),
        }
    }
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
    /// Where lines go instead of stdout ([`Metrics::printing_to`]).
    sink: Option<LineSink>,
}

impl Metrics {
    /// The namespace comes from `METRICS_NAMESPACE` (default `TripLink`).
    pub fn new(namespace: impl Into<String>, service: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            service: service.into(),
            enabled: true,
            tally: None,
            sink: None,
        }
    }

    /// The same metrics, their lines given to `sink` instead of stdout (and printed even
    /// if these metrics were [`Metrics::disabled`] or [`Metrics::tallied`]).
    pub fn printing_to(self, sink: LineSink) -> Self {
        Self {
            enabled: true,
            sink: Some(sink),
            ..self
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
        if let Some(sink) = &self.sink {
            (sink.write)(&line.to_string());
            return;
        }
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
    fn a_sink_gets_the_lines_stdout_would() {
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let kept = lines.clone();
        let metrics = Metrics::tallied("worker").printing_to(LineSink::new(move |l| {
            kept.lock().unwrap().push(l.to_owned())
        }));
        let mut props = Map::new();
        props.insert("outcome".into(), json!("CRSUC"));
        metrics.emit(&[("Connected", 1.0, Unit::Count)], props);
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 1);
        let doc: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(doc["outcome"], "CRSUC");
        assert_eq!(doc["Connected"], 1.0);
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], "TripLink");
        assert_eq!(metrics.totals().get("Connected"), Some(&1.0));
    }

    #[test]
    fn a_sink_as_log_writer_gets_whole_lines_and_skips_targets() {
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let kept = lines.clone();
        let sink = LineSink::new(move |l| kept.lock().unwrap().push(l.to_owned()))
            .skipping_target("concur_sandbox");
        assert!(sink.skips("concur_sandbox"));
        assert!(sink.skips("concur_sandbox::oauth"));
        assert!(!sink.skips("concur_sandboxes"));
        assert!(!sink.skips("worker"));
        let mut writer = sink.make_writer();
        writer.write_all(b"{\"a\":1}\n").unwrap();
        writer.write_all(b"{\"b\":2}\n").unwrap();
        drop(writer);
        assert_eq!(*lines.lock().unwrap(), ["{\"a\":1}", "{\"b\":2}"]);
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
