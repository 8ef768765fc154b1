//! Deterministic seeding and the member directory with every hard case.

mod common;
use std::collections::HashSet;

use common::*;
use concur_sandbox::seed::{expected_status, intended, Case, CYCLE};
use concur_sandbox::Config;
use serde_json::Value;

async fn seeded(seed: u64, n: usize, file: &str) -> (T, String, String) {
    let mut c = Config::for_tests();
    c.seed = Some(seed);
    c.users = n;
    // Removed when the test is done with the files.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file);
    c.members_out = Some(path.clone());
    let t = start_with(c).await;
    let members = std::fs::read_to_string(&path).unwrap();
    let expected = std::fs::read_to_string(path.with_file_name(format!(
        "{}.expected.json",
        path.file_stem().unwrap().to_str().unwrap()
    )))
    .unwrap();
    (t, members, expected)
}

#[tokio::test]
async fn same_seed_same_world() {
    let (t1, m1, e1) = seeded(42, 60, "a.json").await;
    let (t2, m2, e2) = seeded(42, 60, "b.json").await;
    let (_t3, m3, _) = seeded(43, 60, "c.json").await;
    assert_eq!(m1, m2);
    assert_eq!(e1, e2);
    assert_ne!(m1, m3);
    // Same users and request ids in the same queue order.
    let tok1 = t1.app_token().await;
    let tok2 = t2.app_token().await;
    let (a, _, pa) = t1.page(&tok1, "?limit=10").await;
    let (b, _, pb) = t2.page(&tok2, "?limit=10").await;
    assert_eq!(a, b);
    assert_eq!(pa["Items"][3]["lastName"], pb["Items"][3]["lastName"]);
    let exp: Vec<Value> = serde_json::from_str(&e1).unwrap();
    assert_eq!(exp.len(), 60);
    let summary = t1.admin_get("/_sandbox/summary").await;
    assert_eq!(summary["total"], 60);
}

#[tokio::test]
async fn member_file_has_every_hard_case_with_the_documented_outcome() {
    let (t, members, expected) = seeded(7, 40, "hard.json").await;
    let members: Vec<Value> = serde_json::from_str(&members).unwrap();
    let expected: Vec<Value> = serde_json::from_str(&expected).unwrap();
    let cases: HashSet<String> = expected
        .iter()
        .map(|e| e["case"].as_str().unwrap().to_string())
        .collect();
    for c in CYCLE {
        let name = serde_json::to_value(c).unwrap();
        assert!(cases.contains(name.as_str().unwrap()), "missing {name}");
    }
    // Fixed proportions: 40 users = 2 of each hard case, 12 plain.
    assert_eq!(expected.iter().filter(|e| e["case"] == "plain").count(), 12);
    assert_eq!(
        expected
            .iter()
            .filter(|e| e["case"] == "unknown-number")
            .count(),
        2
    );
    for e in &expected {
        let case: Case = match e["case"].as_str().unwrap() {
            "unknown-number" => Case::UnknownNumber,
            "name-mismatch" => Case::NameMismatch,
            "closed" => Case::Closed,
            "locked" => Case::Locked,
            "unverified" => Case::Unverified,
            _ => Case::Plain,
        };
        assert_eq!(e["expected"], intended(case), "{e}");
    }
    // Spot checks of the hard cases against the member file.
    let by_case = |c: &str| members.iter().find(|m| m["case"] == c).unwrap().clone();
    let accent = by_case("accent-in-member");
    assert!(!accent["lastName"].as_str().unwrap().is_ascii(), "{accent}");
    assert_eq!(accent["expected"], "CRSUC");
    let email_only = by_case("email-only");
    assert!(email_only["loyaltyNumber"].is_null());
    assert_eq!(email_only["expected"], "CRSUC");
    assert!(email_only["emails"][0]
        .as_str()
        .unwrap()
        .chars()
        .any(|c| c.is_ascii_uppercase()));
    let nick = by_case("nickname");
    assert_eq!(nick["expected"], "CRSUC");
    for (c, status) in [
        ("closed", "closed"),
        ("locked", "locked"),
        ("unverified", "unverified"),
    ] {
        let m = by_case(c);
        assert_eq!(
            (m["status"].as_str(), m["expected"].as_str()),
            (Some(status), Some("CREU3"))
        );
    }
    assert_eq!(by_case("name-mismatch")["expected"], "CREU2");
    assert!(
        members.iter().all(|m| m["case"] != "unknown-number"),
        "no member for an unknown number"
    );
    // The Concur side of an email-only user has no loyalty number but verified e-mails.
    let e = expected.iter().find(|e| e["case"] == "email-only").unwrap();
    let tok = t.app_token().await;
    let r: Value = t
        .http
        .get(format!(
            "{}{}",
            t.url(CR32),
            e["requestId"].as_str().unwrap()
        ))
        .bearer_auth(&tok)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(r["loyaltyNumber"].is_null());
    assert!(r["emailAddresses"]["email1"].is_string());
    // Nickname: Concur has the short first name, the member the long one.
    let e = expected.iter().find(|e| e["case"] == "nickname").unwrap();
    let r: Value = t
        .http
        .get(format!(
            "{}{}",
            t.url(CR32),
            e["requestId"].as_str().unwrap()
        ))
        .bearer_auth(&tok)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let member = members
        .iter()
        .find(|m| m["memberId"] == e["memberId"])
        .unwrap();
    assert_ne!(r["firstName"], member["firstName"]);
}

#[test]
fn expected_status_rules() {
    let data = concur_sandbox::seed::generate(3, 20);
    for (user, _) in &data.users {
        let e = expected_status(user, &data.members);
        let exp = data
            .expectations
            .iter()
            .find(|x| x.user_id == user.id.to_string())
            .unwrap();
        assert_eq!(e, exp.expected);
    }
}

#[tokio::test]
async fn seeding_at_run_time() {
    let t = start().await;
    let r = t
        .http
        .post(t.url("/_sandbox/seed"))
        .json(&serde_json::json!({"seed": 5, "users": 20}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["users"], 20);
    assert_eq!(
        v["members"].as_array().unwrap().len(),
        19,
        "one unknown-number user has no member"
    );
    // The same seed twice would duplicate ids: refused.
    let r = t
        .http
        .post(t.url("/_sandbox/seed"))
        .json(&serde_json::json!({"seed": 5, "users": 20}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CONFLICT);
    let all = t.admin_get("/_sandbox/requests").await;
    assert_eq!(all["requests"].as_array().unwrap().len(), 20);
}

#[tokio::test]
async fn verify_compares_reported_statuses_with_expectations() {
    let t = start().await;
    let v: Value = t
        .http
        .post(t.url("/_sandbox/seed"))
        .json(&serde_json::json!({"seed": 11, "users": 20}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let exp = v["expectations"].as_array().unwrap().clone();
    let before = t.admin_get("/_sandbox/verify").await;
    assert_eq!(before["ok"], false);
    assert_eq!(before["unreported"], 20);
    let tok = t.app_token().await;
    // A "connector" that reports exactly the expected status, except for one.
    let (ids, _, _) = t.page(&tok, "?limit=10").await;
    assert_eq!(ids.len(), 10);
    for (i, e) in exp.iter().enumerate() {
        let id = e["requestId"].as_str().unwrap();
        let status = if i == 0 {
            "CRRET"
        } else {
            e["expected"].as_str().unwrap()
        };
        assert_eq!(
            t.put(&tok, id, status).await.status(),
            reqwest::StatusCode::NO_CONTENT
        );
    }
    let after = t.admin_get("/_sandbox/verify").await;
    assert_eq!(after["seeded"], 20);
    assert_eq!(after["matched"], 19);
    assert_eq!(after["mismatched"], 1);
    assert_eq!(after["duplicates"], 0);
    assert_eq!(after["ok"], false);
    // A second status for a popped request is a duplicate.
    let id = exp[1]["requestId"].as_str().unwrap();
    assert_eq!(
        t.put(&tok, id, "CRSUC").await.status(),
        reqwest::StatusCode::NOT_FOUND
    );
    assert_eq!(t.admin_get("/_sandbox/verify").await["duplicates"], 1);
}
