//! `triplink-demo --empty-directory`: a first deploy whose members were never imported.
//! Every request would be `CREU1`; the health gate must send Concur nothing at all, and
//! say why (the `DirectoryNotReady` metric and the directory's reason).

use std::process::Command;

use serde_json::Value;

#[test]
fn an_empty_members_table_sends_no_status_and_says_why() {
    let output = Command::new(env!("CARGO_BIN_EXE_triplink-demo"))
        .args(["--empty-directory", "--users", "30", "--seed", "7"])
        .output()
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: Value = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| {
            panic!(
                "no summary line in:\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    assert_eq!(summary["scenario"], "empty_directory", "{summary}");
    assert_eq!(summary["requests"], 30, "{summary}");
    assert_eq!(summary["statuses_sent"], 0, "{summary}");
    assert_eq!(summary["left_pending"], 30, "{summary}");
    assert_eq!(summary["directory"], "no_manifest", "{summary}");
    assert!(
        summary["DirectoryNotReady"].as_f64().unwrap_or(0.0) >= 30.0,
        "{summary}"
    );
    assert_eq!(summary["ok"], true, "{summary}");
    assert!(output.status.success());
    assert!(
        stdout.contains("triplink members import"),
        "the advice is shown"
    );
}
