//! Fault injection: every kind is observable by a client; counts and seeds are honoured.

mod common;
use std::time::{Duration, Instant};

use common::*;
use concur_sandbox::Config;
use reqwest::StatusCode;
use serde_json::Value;

async fn get_list(t: &T, tok: &str) -> reqwest::Result<reqwest::Response> {
    t.http
        .get(t.url(CR32))
        .bearer_auth(tok)
        .header("Accept", "application/json")
        .send()
        .await
}

#[tokio::test]
async fn status_faults_429_500_503_and_next_n() {
    let t = start().await;
    t.users(1).await;
    let tok = t.app_token().await;
    assert_eq!(
        t.set_faults(&[
            "list:429:retry-after=7:next=1",
            "list:503:next=2",
            "list:500:next=1"
        ])
        .await,
        StatusCode::OK
    );
    let r = get_list(&t, &tok).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "7");
    let v: Value = r.json().await.unwrap();
    assert!(
        v["Error"]["Message"].is_string()
            && v["Error"]["Server-Time"].is_string()
            && v["Error"]["Id"].is_string()
    );
    for _ in 0..2 {
        let r = get_list(&t, &tok).await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.headers().get("retry-after").is_none());
    }
    assert_eq!(
        get_list(&t, &tok).await.unwrap().status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(get_list(&t, &tok).await.unwrap().status(), StatusCode::OK);
    // Other routes were never affected; the rules report their hits.
    let f = t.admin_get("/_sandbox/faults").await;
    let hits: Vec<u64> = f["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["hits"].as_u64().unwrap())
        .collect();
    assert_eq!(hits, [1, 2, 1]);
    // Cleared at run time.
    let r = t
        .http
        .delete(t.url("/_sandbox/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(t.admin_get("/_sandbox/faults").await["rules"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn token_route_faults_and_bad_rules() {
    let t = start().await;
    assert_eq!(t.set_faults(&["token:503:next=1"]).await, StatusCode::OK);
    let (s, _) = t
        .token_form(&[
            ("client_id", "sandbox-client"),
            ("client_secret", "sandbox-secret"),
            ("grant_type", "client_credentials"),
        ])
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    t.app_token().await;
    // 503 with a Retry-After when the rule gives one.
    t.set_faults(&["token:503:retry-after=300:next=1"]).await;
    let r = t
        .http
        .post(t.url("/oauth2/v0/token"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "300");
    for bad in [
        "list",
        "nowhere:500",
        "list:418",
        "list:latency=x",
        "list:500:p=2",
        "put:503:next=-1",
        "put:503:when=now",
    ] {
        assert_eq!(t.set_faults(&[bad]).await, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn latency_and_slow_body() {
    let t = start().await;
    t.users(3).await;
    let tok = t.app_token().await;
    t.set_faults(&["list:latency=300:next=1"]).await;
    let started = Instant::now();
    assert_eq!(get_list(&t, &tok).await.unwrap().status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
    t.set_faults(&["list:slow=400:next=1"]).await;
    let started = Instant::now();
    let r = get_list(&t, &tok).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        v["Items"].as_array().unwrap().len(),
        3,
        "the slow body is complete"
    );
}

#[tokio::test]
async fn dropped_connection() {
    let t = start().await;
    let ids = t.users(1).await;
    let tok = t.app_token().await;
    t.set_faults(&["list:drop:next=1"]).await;
    let outcome = match get_list(&t, &tok).await {
        Err(_) => Err(()),
        Ok(r) => r.bytes().await.map(|_| ()).map_err(|_| ()),
    };
    assert!(
        outcome.is_err(),
        "the client must see a connection or body error"
    );
    // The next call is served normally.
    assert_eq!(get_list(&t, &tok).await.unwrap().status(), StatusCode::OK);
    // drop-after: the PUT is applied, the answer is lost.
    t.set_faults(&["put:drop-after:next=1"]).await;
    let r = t
        .http
        .put(format!("{}{}", t.url(CR32), ids[0]))
        .bearer_auth(&tok)
        .json(&serde_json::json!({"status": "CRSUC"}))
        .send()
        .await;
    let failed = match r {
        Err(_) => true,
        Ok(r) => r.bytes().await.is_err(),
    };
    assert!(failed);
    assert_eq!(t.admin_request(&ids[0]).await["state"], "connected");
    // A retried PUT is refused and visible as a second report.
    assert_eq!(
        t.put(&tok, &ids[0], "CRSUC").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(t.admin_request(&ids[0]).await["rejected_puts"], 1);
}

#[tokio::test]
async fn malformed_json_error200_and_xml_despite_accept() {
    let t = start().await;
    t.users(2).await;
    let tok = t.app_token().await;
    t.set_faults(&["list:malformed:next=1"]).await;
    let r = get_list(&t, &tok).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");

    t.set_faults(&["list:error200:next=1"]).await;
    let r = get_list(&t, &tok).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert!(v["Error"]["Message"].is_string(), "{v}");
    assert!(v.get("Items").is_none());

    t.set_faults(&["any:xml:next=1"]).await;
    let r = get_list(&t, &tok).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/xml"));
    assert!(r.text().await.unwrap().starts_with("<ConnectionRequests "));
}

#[tokio::test]
async fn error_after_processing_status_fault() {
    let t = start().await;
    let ids = t.users(1).await;
    let tok = t.app_token().await;
    t.set_faults(&["put:503-after:next=1"]).await;
    assert_eq!(
        t.put(&tok, &ids[0], "CREU1").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(t.admin_request(&ids[0]).await["state"], "requeued-waiting");
}

async fn pattern(seed: u64) -> Vec<u16> {
    let mut c = Config::for_tests();
    c.fault_seed = seed;
    c.faults = vec!["list:500:p=0.5".into()];
    let t = start_with(c).await;
    let tok = t.app_token().await;
    let mut out = Vec::new();
    for _ in 0..24 {
        out.push(get_list(&t, &tok).await.unwrap().status().as_u16());
    }
    out
}

#[tokio::test]
async fn probabilistic_faults_are_deterministic_under_a_seed() {
    let a = pattern(9).await;
    let b = pattern(9).await;
    let c = pattern(10).await;
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(a.contains(&500) && a.contains(&200), "{a:?}");
}

#[tokio::test]
async fn a_503_window_lasts_its_seconds_of_the_sandbox_clock() {
    let t = start_with(Config {
        frozen_clock: true,
        ..Config::for_tests()
    })
    .await;
    t.users(1).await;
    let tok = t.app_token().await;
    assert_eq!(t.set_faults(&["list:503:for=300"]).await, StatusCode::OK);
    for _ in 0..3 {
        let r = get_list(&t, &tok).await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    t.advance(299).await;
    assert_eq!(
        get_list(&t, &tok).await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "still inside the window"
    );
    t.advance(2).await;
    assert_eq!(get_list(&t, &tok).await.unwrap().status(), StatusCode::OK);
    let rule = &t.admin_get("/_sandbox/faults").await["rules"][0];
    assert_eq!(rule["hits"], 4, "{rule}");
    for bad in ["list:503:for=0", "list:503:for=soon"] {
        assert_eq!(t.set_faults(&[bad]).await, StatusCode::BAD_REQUEST, "{bad}");
    }
}
