//! The template's saved Logs Insights queries, run over what the functions really print.
//!
//! `triplink-demo --capture-logs` runs the poller and the worker code as the functions
//! do (their JSON log lines in `init_logging`'s format inside the Lambda runtime's
//! invocation span, their EMF metric documents) against moto and the Concur sandbox,
//! keeping every line as a log event of the poller's or the worker's log group. Each
//! `AWS::Logs::QueryDefinition` of `template.yaml` is parsed from its `QueryString` and
//! run over the events of its `LogGroupNames` (`demo::insights`), and checked against
//! the sandbox's own record of the statuses it accepted.
//!
//! Needs `moto_server` on `PATH` (the project's `.venv/bin`).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use demo::insights::{log_group_name, read_events, LogEvent, Query, QueryResult, DEMO_STACK};
use demo::lambda::cargo::workspace_root;
use demo::lambda::template::{LocalResource, StackSettings, Template};
use serde_json::{json, Value};

const USERS: &str = "40";

struct Run {
    events: Vec<LogEvent>,
    verify: Value,
    template: Template,
}

fn demo_run(dir: &std::path::Path) -> Run {
    let capture = dir.join("events.jsonl");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_triplink-demo"))
        .args(["--users", USERS, "--seed", "42", "--capture-logs"])
        .arg(&capture)
        // The template's default LogLevel.
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("triplink-demo starts");
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            child.kill().ok();
            panic!("triplink-demo did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "triplink-demo failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let verify: Value = serde_json::from_str(
        &std::fs::read_to_string(capture.with_extension("verify.json")).unwrap(),
    )
    .unwrap();
    Run {
        events: read_events(&capture).unwrap(),
        verify,
        template: Template::load(&workspace_root().join("template.yaml")).unwrap(),
    }
}

/// A saved query of the template: its `QueryString` parsed, and its log groups.
fn saved_query(template: &Template, logical_id: &str, request_id: &str) -> (Query, Vec<String>) {
    let resources = BTreeMap::from([
        (
            "PollerLogGroup".to_owned(),
            LocalResource::new(log_group_name(DEMO_STACK, "poller")),
        ),
        (
            "WorkerLogGroup".to_owned(),
            LocalResource::new(log_group_name(DEMO_STACK, "worker")),
        ),
    ]);
    let stack = template
        .stack(
            StackSettings {
                stack_name: DEMO_STACK.into(),
                region: "us-east-1".into(),
                account_id: "123456789012".into(),
            },
            &[("ConcurClientId".into(), "client-id".into())],
            resources,
        )
        .unwrap();
    let resource = template.resource(logical_id).unwrap();
    assert_eq!(
        resource["Type"], "AWS::Logs::QueryDefinition",
        "{logical_id}"
    );
    let properties = &resource["Properties"];
    let text = properties["QueryString"].as_str().unwrap();
    let groups = stack
        .evaluate(&properties["LogGroupNames"])
        .unwrap()
        .unwrap();
    let groups: Vec<String> = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap().to_owned())
        .collect();
    let query = Query::parse(&text.replace("REQUEST_ID", request_id))
        .unwrap_or_else(|e| panic!("{logical_id}: {e}"));
    (query, groups)
}

fn run_over(query: &Query, groups: &[String], events: &[LogEvent]) -> QueryResult {
    let selected: Vec<LogEvent> = events
        .iter()
        .filter(|e| groups.contains(&e.log))
        .cloned()
        .collect();
    query.run(&selected)
}

fn json_of(event: &LogEvent) -> Value {
    serde_json::from_str(&event.message).unwrap_or(Value::Null)
}

#[test]
fn the_saved_queries_answer_from_a_real_run() {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("insights-queries-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = demo_run(&dir);
    std::fs::remove_dir_all(&dir).ok();
    let (poller, worker) = (
        log_group_name(DEMO_STACK, "poller"),
        log_group_name(DEMO_STACK, "worker"),
    );

    // The capture is what the functions print: JSON lines in both groups, log lines
    // inside the Lambda runtime's invocation span, EMF documents with their `_aws` block.
    let lines: Vec<Value> = run.events.iter().map(json_of).collect();
    assert!(lines.iter().all(Value::is_object), "every line is JSON");
    for group in [&poller, &worker] {
        assert!(
            run.events.iter().any(|e| &e.log == group),
            "{group} has lines"
        );
    }
    assert!(lines
        .iter()
        .any(|l| l["span"]["name"] == "Lambda runtime invoke"
            && l["span"]["requestId"].is_string()
            && l["level"] == "INFO"));
    assert!(lines.iter().any(
        |l| l["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "TripLink"
            && l["Service"] == "poller"
    ));

    // What Concur took: every accepted status of every attempt, per code.
    let requests = run.verify["requests"].as_array().unwrap();
    let mut accepted: BTreeMap<String, u64> = BTreeMap::new();
    for request in requests {
        for status in request["reported"].as_array().unwrap() {
            *accepted
                .entry(status.as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    assert!(
        accepted.len() >= 2,
        "a run with several codes: {accepted:?}"
    );

    // outcomes-by-code: exactly what Concur took, each report once.
    let (query, groups) = saved_query(&run.template, "OutcomesQuery", "");
    assert_eq!(groups, [worker.as_str()]);
    let result = run_over(&query, &groups, &run.events);
    assert_eq!(result.columns, ["code", "requests"]);
    let counted: BTreeMap<String, u64> = result
        .rows
        .iter()
        .map(|r| {
            (
                r["code"].as_str().unwrap().to_owned(),
                r["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counted, accepted, "outcomes-by-code against the sandbox");
    let counts: Vec<u64> = result
        .rows
        .iter()
        .map(|r| r["requests"].as_u64().unwrap())
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] >= w[1]),
        "sorted: {counts:?}"
    );
    // The query it replaces counted a report from its log line and its metric document.
    let before = Query::parse(
        "fields coalesce(outcome, fields.outcome) as code | filter ispresent(code) \
         | stats count(*) as requests by code | sort requests desc",
    )
    .unwrap();
    let doubled = run_over(&before, &groups, &run.events);
    let crsuc = doubled
        .rows
        .iter()
        .find(|r| r["code"] == "CRSUC")
        .map(|r| r["requests"].as_u64().unwrap());
    assert_eq!(crsuc, accepted.get("CRSUC").map(|n| n * 2));

    // request-history: a request reported on two attempts (the sandbox's day-later
    // requeue), from both functions, oldest first, its outcomes included.
    let request = requests
        .iter()
        .find(|r| r["reported"].as_array().unwrap().len() >= 2)
        .expect("a request reported on two attempts");
    let id = request["request_id"].as_str().unwrap();
    let statuses: Vec<&str> = request["reported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let (query, groups) = saved_query(&run.template, "RequestHistoryQuery", id);
    assert_eq!(groups, [poller.as_str(), worker.as_str()]);
    let history = run_over(&query, &groups, &run.events);
    // A line names its request at the top level or in the worker's `request` span.
    let mine = run
        .events
        .iter()
        .filter(|e| json_of(e)["request_id"] == id || json_of(e)["span"]["request_id"] == id)
        .count();
    assert_eq!(
        history.rows.len(),
        mine,
        "every line of the request, no other"
    );
    // Its Concur calls are there, each with Concur's correlation id.
    let calls: Vec<_> = history
        .rows
        .iter()
        .filter(|r| r.get("message") == Some(&json!("concur call")))
        .collect();
    assert!(!calls.is_empty(), "{:#?}", history.rows);
    assert!(
        calls.iter().all(|r| r["concur_correlation_id"]
            .as_str()
            .is_some_and(|c| !c.is_empty())),
        "{calls:#?}"
    );
    let times: Vec<i64> = history
        .rows
        .iter()
        .map(|r| r["@timestamp"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    assert!(
        history.rows.iter().any(|r| r["@log"] == poller.as_str()),
        "the poller's requeue"
    );
    let reported: Vec<&str> = history
        .rows
        .iter()
        .filter(|r| r.get("message") == Some(&json!("request reported")))
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert_eq!(reported, statuses, "the log lines' outcomes");
    let documented: Vec<&str> = history
        .rows
        .iter()
        .filter(|r| !r.contains_key("level") && r.contains_key("code"))
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert_eq!(documented, statuses, "the metric documents' outcomes");

    // failures-last-hour: every WARN and ERROR line of both functions, newest first,
    // nothing else.
    let (query, groups) = saved_query(&run.template, "FailuresQuery", "");
    assert_eq!(groups, [poller.as_str(), worker.as_str()]);
    let failures = run_over(&query, &groups, &run.events);
    let expected = lines
        .iter()
        .filter(|l| l["level"] == "WARN" || l["level"] == "ERROR")
        .count()
        .min(500);
    assert_eq!(failures.rows.len(), expected);
    assert!(failures
        .rows
        .iter()
        .all(|r| r["level"] == "WARN" || r["level"] == "ERROR"));
    let times: Vec<i64> = failures
        .rows
        .iter()
        .map(|r| r["@timestamp"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");

    println!(
        "{}",
        json!({
            "events": run.events.len(),
            "accepted": accepted,
            "history_rows": history.rows.len(),
            "failures": failures.rows.len(),
            "seconds": started.elapsed().as_secs_f64(),
        })
    );
}
