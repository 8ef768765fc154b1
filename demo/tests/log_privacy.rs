//! No personal data or secret in any log line, at the most verbose level.
//!
//! `triplink-demo --capture-logs` runs the poller and the worker code as the functions do
//! against moto and the Concur sandbox, with `RUST_LOG=debug` (every crate, the SDKs and
//! the HTTP stack included), and keeps every line the functions print. The sandbox then
//! lists what it holds and handed out (`FILE.secrets.json`): every seeded name, e-mail
//! address, loyalty number and login, every request, access and refresh token it issued,
//! and the client secret; the supplier's members add theirs. None may appear in any line.
//!
//! Needs `moto_server` on `PATH` (the project's `.venv/bin`).

use std::process::Command;

use demo::insights::read_events;
use serde_json::Value;

/// Run the demo with every log level on; the captured lines and the sandbox's secrets.
fn debug_run(dir: &std::path::Path) -> (Vec<String>, Value) {
    let capture = dir.join("events.jsonl");
    let output = Command::new(env!("CARGO_BIN_EXE_triplink-demo"))
        .args(["--users", "40", "--seed", "42", "--capture-logs"])
        .arg(&capture)
        .env("RUST_LOG", "debug")
        .output()
        .expect("triplink-demo runs");
    assert!(
        output.status.success(),
        "triplink-demo failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = read_events(&capture)
        .unwrap()
        .into_iter()
        .map(|event| event.message)
        .collect();
    let secrets = std::fs::read_to_string(capture.with_extension("secrets.json")).unwrap();
    (lines, serde_json::from_str(&secrets).unwrap())
}

fn values<'a>(secrets: &'a Value, kind: &str) -> Vec<&'a str> {
    secrets[kind]
        .as_array()
        .unwrap_or_else(|| panic!("no {kind} in the secrets file"))
        .iter()
        .filter_map(Value::as_str)
        .map(str::trim)
        // Shorter values would be found inside unrelated words and numbers.
        .filter(|v| v.chars().count() >= 3)
        .collect()
}

/// `value` in `line` as a whole word: not inside a longer run of letters and digits
/// (`Bob` inside a random id is no leak; `Bob` or `"Bob"` or `Bob's` is).
fn shows(line: &str, value: &str) -> bool {
    line.match_indices(value).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + value.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

#[test]
fn a_debug_run_logs_no_name_email_loyalty_number_token_or_secret() {
    let dir = std::env::temp_dir().join(format!("log-privacy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (lines, secrets) = debug_run(&dir);
    std::fs::remove_dir_all(&dir).ok();

    // Not vacuous: a real run, at debug level, with request ids and the data seeded.
    assert!(lines.len() >= 300, "only {} lines captured", lines.len());
    let debug = lines
        .iter()
        .filter(|l| l.contains(r#""level":"DEBUG""#))
        .count();
    assert!(
        debug >= 50,
        "only {debug} debug lines in {} lines",
        lines.len()
    );
    assert!(
        lines.iter().any(|l| l.contains("concur call")),
        "the Concur client's debug lines are there"
    );
    let counts = [
        ("names", 60),
        ("emails", 30),
        ("loyalty_numbers", 20),
        ("logins", 40),
        ("tokens", 80),
        ("client_secrets", 1),
    ];
    let mut checked = 0;
    for (kind, at_least) in counts {
        let values = values(&secrets, kind);
        assert!(
            values.len() >= at_least,
            "only {} {kind} to look for",
            values.len()
        );
        for value in values {
            if let Some(line) = lines.iter().find(|l| shows(l, value)) {
                panic!(
                    "a {kind} value ({} characters) is in a log line:\n{line}",
                    value.len()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 230, "{checked} values checked");
    println!(
        "{} lines ({debug} at debug), {checked} values looked for",
        lines.len()
    );
}

#[test]
fn whole_words_are_found_and_parts_of_words_are_not() {
    assert!(shows(r#"{"name":"Bob"}"#, "Bob"));
    assert!(shows("Bob's", "Bob"));
    assert!(shows("x 5314636889", "5314636889"));
    assert!(!shows("vVBob498fZX", "Bob"));
    assert!(!shows("15314636889", "5314636889"));
}
