//! The binary: `--help` documents every option; it serves on --listen and logs calls.

use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_concur-sandbox");

#[test]
fn help_documents_every_option() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--listen",
        "--addr-file",
        "--public-base-url",
        "--geolocation",
        "--client-id",
        "--client-secret",
        "--access-token-ttl",
        "--request-token-ttl",
        "--refresh-token-ttl",
        "--expired-token-status",
        "--creu-delay",
        "--creu-max-requeues",
        "--crret-delay",
        "--crret-max-requeues",
        "--seed",
        "--users",
        "--members-out",
        "--expected-out",
        "--fault",
        "--fault-seed",
        "--clock-start",
        "--frozen-clock",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn bad_fault_rule_is_refused_at_start() {
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--fault", "put:teapot"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown kind"));
}

#[tokio::test]
async fn binary_serves_and_logs_calls() {
    let dir = tempfile::tempdir().unwrap();
    let addr_file = dir.path().join("addr");
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--addr-file"])
        .arg(&addr_file)
        .args(["--seed", "1", "--users", "3"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut addr = String::new();
    for _ in 0..100 {
        if let Ok(a) = std::fs::read_to_string(&addr_file) {
            if !a.is_empty() {
                addr = a;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!addr.is_empty(), "sandbox did not start");
    // The workspace's reqwest has no built-in crypto provider (the functions bring ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let v: serde_json::Value = http
        .get(format!("http://{addr}/_sandbox/summary"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["pending"], 3);
    let r = http
        .get(format!("http://{addr}/api/v3.2/common/connectionrequests/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED);
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("/api/v3.2/common/connectionrequests/") && log.contains("401"),
        "{log}"
    );
}
