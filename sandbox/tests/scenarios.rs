//! The v3.2 page's Scenario 1 and Scenario 2 (35 requests, limit 10), and paging rules.

mod common;
use common::*;
use concur_sandbox::Config;
use reqwest::StatusCode;

#[tokio::test]
async fn scenario_1_get_everything_then_put() {
    let t = start().await;
    let created = t.users(35).await;
    let tok = t.app_token().await;

    let mut seen = Vec::new();
    let (ids, next, _) = t.page(&tok, "?limit=10").await;
    assert_eq!(ids.len(), 10);
    assert_eq!(offset_of(next.as_deref().expect("NextPage")), 10);
    seen.extend(ids);
    for (off, want_len, want_next) in [(10, 10, Some(20)), (20, 10, Some(30)), (30, 5, None)] {
        let (ids, next, _) = t.page(&tok, &format!("?limit=10&offset={off}")).await;
        assert_eq!(ids.len(), want_len, "offset {off}");
        assert_eq!(next.as_deref().map(offset_of), want_next, "offset {off}");
        if let Some(n) = &next {
            assert!(n.contains("limit=10"), "{n}");
        }
        seen.extend(ids);
    }
    // 35 distinct requests, FIFO: the order they were created in.
    assert_eq!(seen, created);
    for id in &seen {
        assert_eq!(
            t.put(&tok, id, "CRSUC").await.status(),
            StatusCode::NO_CONTENT
        );
    }
    let (ids, next, _) = t.page(&tok, "?limit=10").await;
    assert!(ids.is_empty());
    assert!(next.is_none());
    // ... until a new one becomes available.
    let newer = t.users(1).await;
    let (ids, next, _) = t.page(&tok, "?limit=10").await;
    assert_eq!(ids, newer);
    assert!(next.is_none());
}

#[tokio::test]
async fn scenario_2_interleaving_get_and_put() {
    let t = start().await;
    let created = t.users(35).await;
    let tok = t.app_token().await;
    let mut seen = Vec::new();
    for (want_len, want_next) in [(10, Some(10)), (10, Some(10)), (10, Some(10)), (5, None)] {
        let (ids, next, _) = t.page(&tok, "?limit=10").await;
        assert_eq!(ids.len(), want_len);
        assert_eq!(next.as_deref().map(offset_of), want_next);
        for id in &ids {
            assert_eq!(
                t.put(&tok, id, "CRSUC").await.status(),
                StatusCode::NO_CONTENT
            );
        }
        seen.extend(ids);
    }
    assert_eq!(seen, created);
    let (ids, next, _) = t.page(&tok, "?limit=10").await;
    assert!(ids.is_empty() && next.is_none());
    let summary = t.admin_get("/_sandbox/summary").await;
    assert_eq!(summary["connected"], 35);
    assert_eq!(summary["rejected_puts"], 0);
}

#[tokio::test]
async fn following_next_page_after_puts_skips_shifted_requests() {
    // The page's warning: after PUTting the first page, offset=10 skips 10 requests.
    let t = start().await;
    let created = t.users(25).await;
    let tok = t.app_token().await;
    let (ids, next, _) = t.page(&tok, "?limit=10").await;
    for id in &ids {
        t.put(&tok, id, "CRSUC").await;
    }
    let (ids2, _, _) = t
        .page(
            &tok,
            &format!("?limit=10&offset={}", offset_of(&next.unwrap())),
        )
        .await;
    assert_eq!(ids2, created[20..25].to_vec());
}

#[tokio::test]
async fn limit_defaults_to_5_and_is_clamped_to_10() {
    let t = start().await;
    t.users(23).await;
    let tok = t.app_token().await;
    let (ids, next, _) = t.page(&tok, "").await;
    assert_eq!(ids.len(), 5);
    let next = next.unwrap();
    assert!(next.contains("limit=5") && offset_of(&next) == 5, "{next}");
    let (ids, next, _) = t.page(&tok, "?limit=50").await;
    assert_eq!(ids.len(), 10);
    assert!(next.unwrap().contains("limit=10"));
    // Past the end: empty page, null NextPage.
    let (ids, next, _) = t.page(&tok, "?limit=10&offset=100").await;
    assert!(ids.is_empty() && next.is_none());
}

#[tokio::test]
async fn bad_paging_parameters_are_400() {
    let t = start().await;
    t.users(3).await;
    let tok = t.app_token().await;
    for q in [
        "?limit=0",
        "?limit=-1",
        "?limit=abc",
        "?limit=2.5",
        "?offset=-1",
        "?offset=x",
        "?limit=",
    ] {
        let r = t
            .http
            .get(format!("{}{}", t.url(CR32), q))
            .bearer_auth(&tok)
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{q}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["Error"]["Message"].is_string(), "{q}: {v}");
    }
}

#[tokio::test]
async fn next_page_and_uri_use_the_configured_public_host() {
    let mut c = Config::for_tests();
    c.public_base_url = Some("https://us.api.concursolutions.com".into());
    let t = start_with(c).await;
    t.users(3).await;
    let tok = t.app_token().await;
    let (_, next, body) = t.page(&tok, "?limit=2").await;
    assert_eq!(
        next.as_deref(),
        Some("https://us.api.concursolutions.com/api/v3.2/common/connectionrequests/?limit=2&offset=2")
    );
    let item = &body["Items"][0];
    assert_eq!(
        item["URI"].as_str().unwrap(),
        format!(
            "https://us.api.concursolutions.com/api/v3.2/common/connectionrequests/{}",
            item["ID"].as_str().unwrap()
        )
    );
}

#[tokio::test]
async fn each_get_issues_a_fresh_request_token() {
    let t = start().await;
    let ids = t.users(1).await;
    let tok = t.app_token().await;
    let (_, _, a) = t.page(&tok, "").await;
    let (_, _, b) = t.page(&tok, "").await;
    let ta = a["Items"][0]["requestToken"].as_str().unwrap().to_string();
    let tb = b["Items"][0]["requestToken"].as_str().unwrap().to_string();
    assert_ne!(ta, tb);
    let adm = t.admin_request(&ids[0]).await;
    assert_eq!(adm["current_request_token"], tb.as_str());
    assert_eq!(adm["tokens_issued"], 2);
    assert_eq!(adm["state"], "in-flight");
}
