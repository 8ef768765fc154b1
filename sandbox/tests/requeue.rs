//! Requeue rules with the virtual clock: CREU* after 24 h (4 times, the 5th ends
//! it), CRRET after 1 h (48 times, the 49th ends it), CRPA1/2 like CRRET, and
//! PUTs on requests that are not outstanding.

mod common;
use common::*;
use reqwest::StatusCode;

const DAY: i64 = 24 * 3600;

#[tokio::test]
async fn creu_requeues_after_24h_four_times_then_fails_for_good() {
    let t = start().await;
    let id = t.users(1).await.remove(0);
    let mut tok = t.app_token().await;
    let mut tokens = Vec::new();
    for n in 1..=4u32 {
        let (ids, _, body) = t.page(&tok, "").await;
        assert_eq!(ids, vec![id.clone()], "attempt {n}");
        tokens.push(
            body["Items"][0]["requestToken"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        let status = ["CREU1", "CREU2", "CREU3", "CREU1"][(n - 1) as usize];
        assert_eq!(
            t.put(&tok, &id, status).await.status(),
            StatusCode::NO_CONTENT
        );
        let adm = t.admin_request(&id).await;
        assert_eq!(adm["state"], "requeued-waiting");
        assert_eq!(adm["creu_count"], n);
        // Not back before 24 h...
        t.advance(DAY - 1).await;
        tok = t.app_token().await; // app tokens live 1 h of virtual time
        assert!(
            t.page(&tok, "").await.0.is_empty(),
            "attempt {n}: back too early"
        );
        // ...back at 24 h, same ID.
        t.advance(1).await;
        tok = t.app_token().await; // app tokens live 1 h of virtual time
        assert_eq!(t.admin_request(&id).await["attempt"], n + 1);
    }
    // Fifth attempt: the 5th CREU* ends it.
    let (ids, _, body) = t.page(&tok, "").await;
    assert_eq!(ids, vec![id.clone()]);
    tokens.push(
        body["Items"][0]["requestToken"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    assert_eq!(
        t.put(&tok, &id, "CREU2").await.status(),
        StatusCode::NO_CONTENT
    );
    let adm = t.admin_request(&id).await;
    assert_eq!(adm["state"], "failed-final");
    assert_eq!(adm["creu_count"], 5);
    assert_eq!(adm["accepted_puts"], 5);
    t.advance(10 * DAY).await;
    tok = t.app_token().await; // app tokens live 1 h of virtual time
    assert!(t.page(&tok, "").await.0.is_empty());
    // Every attempt came with a new request token.
    let mut uniq = tokens.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 5);
    // A final request refuses further statuses, and the refusal is on record.
    assert_eq!(
        t.put(&tok, &id, "CRSUC").await.status(),
        StatusCode::NOT_FOUND
    );
    let adm = t.admin_request(&id).await;
    assert_eq!(adm["rejected_puts"], 1);
    assert_eq!(adm["history"].as_array().unwrap().len(), 6);
    assert_eq!(adm["history"][5]["accepted"], false);
}

#[tokio::test]
async fn crret_requeues_after_1h_48_times_then_fails() {
    let t = start().await;
    let id = t.users(1).await.remove(0);
    let mut tok = t.app_token().await;
    for n in 1..=48u32 {
        assert_eq!(t.page(&tok, "").await.0, vec![id.clone()], "attempt {n}");
        assert_eq!(
            t.put(&tok, &id, "CRRET").await.status(),
            StatusCode::NO_CONTENT
        );
        if n == 1 {
            t.advance(3599).await;
            tok = t.app_token().await; // app tokens live 1 h of virtual time
            assert!(t.page(&tok, "").await.0.is_empty(), "back before 1 h");
            t.advance(1).await;
            tok = t.app_token().await; // app tokens live 1 h of virtual time
        } else {
            t.advance(3600).await;
            tok = t.app_token().await; // app tokens live 1 h of virtual time
        }
    }
    assert_eq!(t.admin_request(&id).await["crret_count"], 48);
    assert_eq!(t.page(&tok, "").await.0, vec![id.clone()]);
    assert_eq!(
        t.put(&tok, &id, "CRRET").await.status(),
        StatusCode::NO_CONTENT
    );
    let adm = t.admin_request(&id).await;
    assert_eq!(adm["state"], "failed-final");
    assert_eq!(adm["crret_count"], 49);
    assert_eq!(adm["attempt"], 49);
    t.advance(DAY).await;
    tok = t.app_token().await; // app tokens live 1 h of virtual time
    assert!(t.page(&tok, "").await.0.is_empty());
}

#[tokio::test]
async fn creu_and_crret_are_counted_separately_and_crpa_counts_as_crret() {
    let t = start().await;
    let id = t.users(1).await.remove(0);
    let mut tok = t.app_token().await;
    for (status, wait) in [
        ("CRPA1", 3600),
        ("CREU1", DAY),
        ("CRPA2", 3600),
        ("CRRET", 3600),
    ] {
        assert_eq!(t.page(&tok, "").await.0, vec![id.clone()]);
        assert_eq!(
            t.put(&tok, &id, status).await.status(),
            StatusCode::NO_CONTENT
        );
        t.advance(wait).await;
        tok = t.app_token().await; // app tokens live 1 h of virtual time
    }
    let adm = t.admin_request(&id).await;
    assert_eq!(adm["crret_count"], 3);
    assert_eq!(adm["creu_count"], 1);
    assert_eq!(adm["state"], "pending");
    assert_eq!(t.page(&tok, "").await.0, vec![id.clone()]);
    assert_eq!(
        t.put(&tok, &id, "CRSUC").await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(t.admin_request(&id).await["state"], "connected");
}

#[tokio::test]
async fn second_status_for_the_same_attempt_is_refused_and_recorded() {
    let t = start().await;
    let ids = t.users(2).await;
    let tok = t.app_token().await;
    t.page(&tok, "").await;
    assert_eq!(
        t.put(&tok, &ids[0], "CREU1").await.status(),
        StatusCode::NO_CONTENT
    );
    // Popped and waiting: a second status for attempt 1 is refused.
    let r = t.put(&tok, &ids[0], "CRSUC").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let adm = t.admin_request(&ids[0]).await;
    let h = adm["history"].as_array().unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(
        (h[0]["attempt"].as_u64(), h[0]["accepted"].as_bool()),
        (Some(1), Some(true))
    );
    assert_eq!(
        (h[1]["attempt"].as_u64(), h[1]["accepted"].as_bool()),
        (Some(1), Some(false))
    );
    assert_eq!(h[1]["http_status"], 404);
    // CRSUC twice: same.
    assert_eq!(
        t.put(&tok, &ids[1], "CRSUC").await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        t.put(&tok, &ids[1], "CRSUC").await.status(),
        StatusCode::NOT_FOUND
    );
    let summary = t.admin_get("/_sandbox/summary").await;
    assert_eq!(summary["rejected_puts"], 2);
    assert_eq!(summary["accepted_puts"], 2);
}

#[tokio::test]
async fn requeued_request_comes_back_behind_older_ones() {
    let t = start().await;
    let ids = t.users(3).await;
    let mut tok = t.app_token().await;
    t.page(&tok, "").await;
    t.put(&tok, &ids[0], "CRRET").await;
    t.advance(3600).await;
    tok = t.app_token().await; // app tokens live 1 h of virtual time
    let newer = t.users(1).await;
    let (order, _, _) = t.page(&tok, "").await;
    assert_eq!(
        order,
        vec![
            ids[1].clone(),
            ids[2].clone(),
            ids[0].clone(),
            newer[0].clone()
        ]
    );
}
