//! The template's `init-errors` metric filters count the line a failed cold start
//! really logs: `lambda_init::or_report` is run with a configuration error under
//! `init_logging`'s subscriber (its lines captured), and each `AWS::Logs::MetricFilter`
//! pattern of the form `{ $.FIELD = "VALUE" }` is applied to the captured lines.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use demo::lambda::cargo::workspace_root;
use demo::lambda::template::Template;
use serde_json::Value;
use triplink_shared::config::ConfigError;
use triplink_shared::lambda_init::{self, INIT_ERROR_MESSAGE};
use triplink_shared::telemetry::{init_logging_to, LineSink};

/// `{ $.field = "value" }` (the only form the template uses), as (field path, value).
fn equality_pattern(pattern: &str) -> (Vec<String>, String) {
    let inner = pattern
        .trim()
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or_else(|| panic!("not a JSON filter pattern: {pattern}"));
    let (selector, value) = inner
        .split_once('=')
        .unwrap_or_else(|| panic!("not an equality: {pattern}"));
    let path = selector
        .trim()
        .strip_prefix("$.")
        .unwrap_or_else(|| panic!("not a $. selector: {pattern}"));
    assert!(
        !path.contains(['[', '*', ' ']) && !value.contains(['&', '|', '*']),
        "unsupported pattern {pattern}"
    );
    let value = value.trim();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("not a quoted value: {pattern}"));
    (
        path.split('.').map(str::to_owned).collect(),
        value.to_owned(),
    )
}

fn matches(line: &str, (path, value): &(Vec<String>, String)) -> bool {
    let Ok(json) = serde_json::from_str::<Value>(line) else {
        return false;
    };
    let mut at = &json;
    for part in path {
        match at.get(part) {
            Some(next) => at = next,
            None => return false,
        }
    }
    at.as_str() == Some(value.as_str())
}

#[tokio::test]
async fn the_init_error_filters_count_a_failed_cold_start() {
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let kept = lines.clone();
    init_logging_to(LineSink::new(move |l| {
        kept.lock().unwrap().push(l.to_owned())
    }));
    lambda_runtime::tracing::info!("an ordinary line");
    // Outside Lambda (no AWS_LAMBDA_RUNTIME_API): logged, not posted.
    let env: HashMap<String, String> = HashMap::new();
    let result: Result<(), ConfigError> =
        lambda_init::or_report(&env, Err(ConfigError::Missing("REQUESTS_TABLE"))).await;
    assert!(result.is_err());
    let lines = lines.lock().unwrap().clone();
    assert_eq!(lines.len(), 2, "{lines:?}");

    let template = Template::load(&workspace_root().join("template.yaml")).unwrap();
    let filters: Vec<(String, Value)> = template.root()["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Logs::MetricFilter")
        .map(|(id, r)| (id.clone(), r["Properties"].clone()))
        .collect();
    let groups: Vec<&str> = filters
        .iter()
        .filter_map(|(_, p)| p["LogGroupName"]["Ref"].as_str())
        .collect();
    assert_eq!(
        groups,
        ["PollerLogGroup", "WorkerLogGroup"],
        "both functions"
    );
    for (id, properties) in &filters {
        let transformation = &properties["MetricTransformations"][0];
        assert_eq!(transformation["MetricName"], "InitErrors", "{id}");
        assert_eq!(transformation["MetricValue"], "1", "{id}");
        let pattern = equality_pattern(properties["FilterPattern"].as_str().unwrap());
        assert_eq!(pattern.1, INIT_ERROR_MESSAGE, "{id}");
        let counted: Vec<&String> = lines.iter().filter(|l| matches(l, &pattern)).collect();
        assert_eq!(counted.len(), 1, "{id}: {lines:?}");
        let line: Value = serde_json::from_str(counted[0]).unwrap();
        assert_eq!(line["level"], "ERROR");
        assert_eq!(line["error_type"], ConfigError::Missing("x").error_type());
        assert!(line["error"].as_str().unwrap().contains("REQUESTS_TABLE"));
    }
}
