//! The worker's log lines as deployed (JSON, `RUST_LOG=info`): every line written while a
//! request is handled carries its request id (at the top level or in the `request`
//! span), and every Concur call is an `info` line with Concur's correlation id.

mod common;

use std::collections::BTreeSet;

use common::*;
use triplink_shared::testing;

#[tokio::test]
async fn every_line_names_its_request_and_concur_calls_their_correlation_id() {
    let env = setup(12).await;
    let worker = worker(&env, &env.concur, &env.members);
    let items = testing::scan_requests(&env.store).await;
    let ids: BTreeSet<String> = items.iter().map(|i| i.request_id.clone()).collect();
    let batch = records(&items);

    // The sandbox runs in this process: its own lines are not the worker's.
    let logs = testing::capture_logs("info,concur_sandbox=off");
    let response = worker
        .process_batch(&batch, "invocation-1", lambda_deadline_ms())
        .await;
    assert!(response.batch_item_failures.is_empty());
    let lines = logs.lines();
    drop(logs);

    assert!(lines.len() >= ids.len(), "{lines:#?}");
    let mut named = BTreeSet::new();
    for line in &lines {
        let request_id = line["request_id"]
            .as_str()
            .or_else(|| line["span"]["request_id"].as_str())
            .unwrap_or_else(|| panic!("a line without its request id: {line}"));
        assert!(ids.contains(request_id), "{line}");
        named.insert(request_id.to_owned());
    }
    assert_eq!(named, ids, "every request has its lines");

    let calls: Vec<_> = lines
        .iter()
        .filter(|line| line["message"] == "concur call")
        .collect();
    // Each request's status report (besides the token calls of the matched ones).
    let reports: BTreeSet<&str> = calls
        .iter()
        .filter(|c| c["op"] == "update_status")
        .filter_map(|c| c["span"]["request_id"].as_str())
        .collect();
    assert_eq!(reports.len(), ids.len(), "{calls:#?}");
    for call in &calls {
        assert_eq!(call["level"], "INFO", "{call}");
        assert!(
            call["correlation_id"]
                .as_str()
                .is_some_and(|c| !c.is_empty()),
            "{call}"
        );
        assert!(call["span"]["request_id"].is_string(), "{call}");
        assert_eq!(call["span"]["aws_request_id"], "invocation-1", "{call}");
    }
}
