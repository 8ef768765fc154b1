//! Token grants and their errors, and bearer checks on API calls.

mod common;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use concur_sandbox::Config;
use reqwest::StatusCode;
use serde_json::Value;

/// (form, HTTP status, Concur code, OAuth2 error)
type ErrorCase = (
    &'static [(&'static str, &'static str)],
    StatusCode,
    i64,
    &'static str,
);

const CID: (&str, &str) = ("client_id", "sandbox-client");
const CSECRET: (&str, &str) = ("client_secret", "sandbox-secret");

#[tokio::test]
async fn client_credentials_grant_and_its_errors() {
    let t = start().await;
    let (s, v) = t
        .token_form(&[CID, CSECRET, ("grant_type", "client_credentials")])
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["expires_in"], "3600", "expires_in is a string");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["geolocation"], t.sb.local_url.as_str());
    assert!(v["access_token"].is_string() && v["scope"].is_string());
    assert!(v.get("refresh_token").is_none());

    let cases: [ErrorCase; 6] = [
        (
            &[
                CID,
                ("client_secret", "wrong"),
                ("grant_type", "client_credentials"),
            ],
            StatusCode::UNAUTHORIZED,
            64,
            "invalid_client",
        ),
        (
            &[
                ("client_id", "nobody"),
                CSECRET,
                ("grant_type", "client_credentials"),
            ],
            StatusCode::UNAUTHORIZED,
            61,
            "invalid_client",
        ),
        (
            &[CSECRET, ("grant_type", "client_credentials")],
            StatusCode::BAD_REQUEST,
            62,
            "invalid_request",
        ),
        (
            &[CID, ("grant_type", "client_credentials")],
            StatusCode::BAD_REQUEST,
            63,
            "invalid_request",
        ),
        (
            &[CID, CSECRET],
            StatusCode::BAD_REQUEST,
            65,
            "invalid_request",
        ),
        (
            &[CID, CSECRET, ("grant_type", "authorization_code")],
            StatusCode::BAD_REQUEST,
            60,
            "invalid_grant",
        ),
    ];
    for (form, status, code, error) in cases {
        let (s, v) = t.token_form(form).await;
        assert_eq!(s, status, "{v}");
        assert_eq!(v["code"], code, "{v}");
        assert_eq!(v["error"], error, "{v}");
        assert!(v["error_description"].is_string());
        assert!(v["geolocation"].is_string());
    }
}

async fn request_token(t: &T, app: &str) -> (String, String) {
    let (_, _, body) = t.page(app, "").await;
    let item = &body["Items"][0];
    (
        item["userId"].as_str().unwrap().to_string(),
        item["requestToken"].as_str().unwrap().to_string(),
    )
}

async fn exchange(t: &T, user: &str, rt: &str) -> (StatusCode, Value) {
    t.token_form(&[
        CID,
        CSECRET,
        ("grant_type", "password"),
        ("credtype", "authtoken"),
        ("username", user),
        ("password", rt),
    ])
    .await
}

#[tokio::test]
async fn password_grant_with_authtoken_once_only() {
    let t = start().await;
    let id = t.users(1).await.remove(0);
    let app = t.app_token().await;
    let (user, rt) = request_token(&t, &app).await;
    let (s, v) = exchange(&t, &user, &rt).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["expires_in"], "3600");
    assert!(v["refresh_token"].is_string() && v["access_token"].is_string());
    assert_eq!(v["geolocation"], t.sb.local_url.as_str());
    let idt = v["id_token"].as_str().unwrap();
    let parts: Vec<&str> = idt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["sub"], user.as_str());
    // Used: a second exchange fails with 103.
    let (s, v) = exchange(&t, &user, &rt).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["code"], 103);
    assert_eq!(
        t.admin_request(&id).await["exchanges"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn request_token_errors() {
    let mut c = Config::for_tests();
    c.geolocation = Some("https://us2.api.concursolutions.com".into());
    let t = start_with(c).await;
    t.users(2).await;
    let app = t.app_token().await;
    let (user, rt) = request_token(&t, &app).await;
    // Another user's id → 136.
    let (s, v) = exchange(&t, "00000000-0000-4000-8000-000000000000", &rt).await;
    assert_eq!(
        (s, v["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(136))
    );
    assert_eq!(v["geolocation"], "https://us2.api.concursolutions.com");
    // Unknown token → 103.
    let (s, v) = exchange(&t, &user, "not-a-token").await;
    assert_eq!(
        (s, v["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(103))
    );
    // Missing username / password / bad credtype.
    let (_, v) = t
        .token_form(&[
            CID,
            CSECRET,
            ("grant_type", "password"),
            ("credtype", "authtoken"),
            ("password", &rt),
        ])
        .await;
    assert_eq!(v["code"], 51);
    let (_, v) = t
        .token_form(&[
            CID,
            CSECRET,
            ("grant_type", "password"),
            ("credtype", "authtoken"),
            ("username", &user),
        ])
        .await;
    assert_eq!(v["code"], 52);
    let (_, v) = t
        .token_form(&[
            CID,
            CSECRET,
            ("grant_type", "password"),
            ("credtype", "magic"),
            ("username", &user),
            ("password", &rt),
        ])
        .await;
    assert_eq!(v["code"], 120);
    // Expired after 24 h (virtual).
    t.advance(24 * 3600).await;
    let (s, v) = exchange(&t, &user, &rt).await;
    assert_eq!(
        (s, v["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(103))
    );
}

#[tokio::test]
async fn request_token_is_alive_until_24h() {
    let t = start().await;
    t.users(1).await;
    let app = t.app_token().await;
    let (user, rt) = request_token(&t, &app).await;
    t.advance(24 * 3600 - 1).await;
    let (s, _) = exchange(&t, &user, &rt).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn refresh_rotates_and_revoke_ends_all() {
    let t = start().await;
    t.users(1).await;
    let app = t.app_token().await;
    let (user, rt) = request_token(&t, &app).await;
    let (_, v) = exchange(&t, &user, &rt).await;
    let r1 = v["refresh_token"].as_str().unwrap().to_string();
    let refresh = |r: String| {
        let t = &t;
        async move {
            t.token_form(&[
                CID,
                CSECRET,
                ("grant_type", "refresh_token"),
                ("refresh_token", &r),
            ])
            .await
        }
    };
    let (s, v) = refresh(r1.clone()).await;
    assert_eq!(s, StatusCode::OK);
    let r2 = v["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r1, r2);
    assert!(v["id_token"].is_string() && v["geolocation"].is_string());
    // The old one stops working.
    let (s, v) = refresh(r1).await;
    assert_eq!(
        (s, v["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(108))
    );
    let (_, v) = t
        .token_form(&[CID, CSECRET, ("grant_type", "refresh_token")])
        .await;
    assert_eq!(v["code"], 106);
    // Revoke with the user's access token: r2 (and any other) stops working.
    let (_, v) = refresh(r2).await;
    let user_access = v["access_token"].as_str().unwrap().to_string();
    let r3 = v["refresh_token"].as_str().unwrap().to_string();
    let r = t
        .http
        .delete(t.url("/app-mgmt/v0/connections"))
        .bearer_auth(&user_access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (s, v) = refresh(r3).await;
    assert_eq!(
        (s, v["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(108))
    );
    // Revoke needs a user token.
    let r = t
        .http
        .delete(t.url("/app-mgmt/v0/connections"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = t
        .http
        .delete(t.url("/app-mgmt/v0/connections"))
        .bearer_auth(&app)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn refresh_token_expires_after_six_months() {
    let t = start().await;
    t.users(1).await;
    let app = t.app_token().await;
    let (user, rt) = request_token(&t, &app).await;
    let (_, v) = exchange(&t, &user, &rt).await;
    let r = v["refresh_token"].as_str().unwrap().to_string();
    t.advance(184 * 24 * 3600).await;
    let (s, v) = t
        .token_form(&[
            CID,
            CSECRET,
            ("grant_type", "refresh_token"),
            ("refresh_token", &r),
        ])
        .await;
    assert_eq!(
        (s, v["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(108))
    );
}

async fn list_status(t: &T, auth: Option<&str>) -> (StatusCode, Option<String>, String) {
    let mut rq = t.http.get(t.url(CR32)).header("Accept", "application/json");
    if let Some(a) = auth {
        rq = rq.header("Authorization", a);
    }
    let r = rq.send().await.unwrap();
    let s = r.status();
    let www = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    (s, www, r.text().await.unwrap())
}

#[tokio::test]
async fn bearer_is_checked_on_every_api_call() {
    let t = start().await;
    let ids = t.users(1).await;
    let app = t.app_token().await;
    let (s, www, body) = list_status(&t, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(www.is_some());
    assert!(body.contains("\"Error\""), "{body}");
    for bad in [
        "Bearer nope",
        "Basic c2FuZGJveDpzZWNyZXQ=",
        "Bearer",
        &format!("Token {app}"),
    ] {
        assert_eq!(
            list_status(&t, Some(bad)).await.0,
            StatusCode::UNAUTHORIZED,
            "{bad}"
        );
    }
    assert_eq!(
        list_status(&t, Some(&format!("Bearer {app}"))).await.0,
        StatusCode::OK
    );
    // Every route refuses a missing token.
    let item = format!("{}{}", t.url(CR32), ids[0]);
    assert_eq!(
        t.http.get(&item).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        t.http
            .put(&item)
            .body("{\"status\":\"CRSUC\"}")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        t.http
            .post(format!("{}?user=x", t.url(CR32)))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        t.http
            .get(t.url("/api/v3.0/common/connectionrequests"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // Expired after an hour: 401 by default.
    t.advance(3600).await;
    let (s, _, _) = list_status(&t, Some(&format!("Bearer {app}"))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // No state change happened through the refused calls.
    assert_eq!(
        t.admin_request(&ids[0]).await["history"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test]
async fn expired_token_status_can_be_403_and_user_tokens_are_refused() {
    let mut c = Config::for_tests();
    c.expired_token_status = 403;
    let t = start_with(c).await;
    t.users(1).await;
    let app = t.app_token().await;
    let (user, rt) = request_token(&t, &app).await;
    let (_, v) = exchange(&t, &user, &rt).await;
    let ua = v["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        list_status(&t, Some(&format!("Bearer {ua}"))).await.0,
        StatusCode::FORBIDDEN
    );
    t.advance(3601).await;
    assert_eq!(
        list_status(&t, Some(&format!("Bearer {app}"))).await.0,
        StatusCode::FORBIDDEN
    );
    // A fresh app token works again.
    let app2 = t.app_token().await;
    assert_eq!(
        list_status(&t, Some(&format!("Bearer {app2}"))).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_elsewhere_fault_answers_code_16_on_the_exchange_only() {
    let t = start().await;
    t.users(1).await;
    let app = t.app_token().await;
    let (user, rt) = request_token(&t, &app).await;
    assert_eq!(
        t.set_faults(&["authtoken:elsewhere:next=1"]).await,
        StatusCode::OK
    );
    // The client-credentials grant is not an exchange: not affected.
    t.app_token().await;
    let (s, v) = exchange(&t, &user, &rt).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["code"], 16);
    assert_eq!(v["error"], "invalid_request");
    assert_eq!(v["error_description"], "user lives elsewhere");
    assert_eq!(v["geolocation"], t.sb.local_url.as_str(), "its own base");
    // The grant was not processed: the same token is still good.
    let (s, v) = exchange(&t, &user, &rt).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let hits = &t.admin_get("/_sandbox/faults").await["rules"][0]["hits"];
    assert_eq!(hits, 1);
    for bad in ["list:elsewhere", "put:elsewhere:next=1"] {
        assert_eq!(t.set_faults(&[bad]).await, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn superseding_request_tokens_kills_the_earlier_ones_on_every_get() {
    for supersede in [false, true] {
        let mut config = Config::for_tests();
        config.supersede_request_tokens = supersede;
        let t = start_with(config).await;
        t.users(1).await;
        let app = t.app_token().await;
        let (user, first) = request_token(&t, &app).await;
        let (again, second) = request_token(&t, &app).await;
        assert_eq!(user, again);
        assert_ne!(first, second, "every GET issues a new token");
        let (s, v) = exchange(&t, &user, &first).await;
        if supersede {
            assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
            assert_eq!(v["code"], 103);
            let (s, v) = exchange(&t, &user, &second).await;
            assert_eq!(s, StatusCode::OK, "the current token still works: {v}");
        } else {
            assert_eq!(s, StatusCode::OK, "earlier tokens keep working: {v}");
        }
    }
}
