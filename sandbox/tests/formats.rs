//! XML by default, JSON on request; v3.0 and v3.1 shapes; PUT bodies; GET by id; POST.

mod common;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn one_user(t: &T) -> (String, String) {
    let v: Value = t
        .http
        .post(t.url("/_sandbox/users"))
        .json(&json!({
            "login_id": "maria.smith@example.com",
            "first_name": "Maria",
            "last_name": "Smith & Söhne",
            "loyalty_number": "23242526",
            "emails": ["maria@example.com", "m.smith@example.org"]
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        v["users"][0]["request_id"].as_str().unwrap().to_string(),
        v["users"][0]["user_id"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn xml_without_accept_header() {
    let t = start().await;
    let (id, user) = one_user(&t).await;
    let tok = t.app_token().await;
    // A raw request with no Accept header at all.
    let mut s = tokio::net::TcpStream::connect(t.sb.addr).await.unwrap();
    let req = format!(
        "GET /api/v3.2/common/connectionrequests/?limit=2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("content-type: application/xml"),
        "{out}"
    );
    let body = out.split("\r\n\r\n").nth(1).unwrap();
    assert!(body.starts_with(r#"<ConnectionRequests xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><Items><ConnectionRequest><ID>"#), "{body}");
    assert!(body.contains(&format!("<ID>{id}</ID>")));
    assert!(body.contains("<middleName xsi:nil=\"true\" />"));
    assert!(body.contains("<lastName>Smith &amp; Söhne</lastName>"));
    assert!(body.contains("<email1>maria@example.com</email1><email2>m.smith@example.org</email2><email3 xsi:nil=\"true\" />"));
    assert!(body.contains(&format!("<userId>{user}</userId>")));
    assert!(body.contains("<status>Pending</status>"));
    assert!(
        body.ends_with("</Items><NextPage xsi:nil=\"true\" /></ConnectionRequests>"),
        "{body}"
    );
    // `*/*` is not a request for JSON either.
    let r = t
        .http
        .get(t.url(CR32))
        .bearer_auth(&tok)
        .header("Accept", "*/*")
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/xml"));
}

#[tokio::test]
async fn v32_json_shape() {
    let t = start().await;
    let (id, user) = one_user(&t).await;
    let tok = t.app_token().await;
    let (_, next, body) = t.page(&tok, "").await;
    assert!(next.is_none());
    assert!(body["NextPage"].is_null());
    let item = &body["Items"][0];
    let mut keys: Vec<&str> = item
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "ID",
            "URI",
            "emailAddresses",
            "firstName",
            "lastModified",
            "lastName",
            "loyaltyNumber",
            "middleName",
            "requestToken",
            "status",
            "userId"
        ]
    );
    assert_eq!(item["ID"], id.as_str());
    assert_eq!(item["userId"], user.as_str());
    assert_eq!(item["status"], "Pending");
    assert!(item["middleName"].is_null());
    assert_eq!(
        item["emailAddresses"],
        json!({"email1": "maria@example.com", "email2": "m.smith@example.org", "email3": null, "email4": null, "email5": null})
    );
    assert_eq!(item["lastModified"], "2026-01-01T00:00:00");
    // GET by id, JSON and XML.
    let r = t
        .http
        .get(format!("{}{}", t.url(CR32), id))
        .bearer_auth(&tok)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    let one: Value = r.json().await.unwrap();
    assert_eq!(one["ID"], id.as_str());
    assert_eq!(one["loyaltyNumber"], "23242526");
    let r = t
        .http
        .get(format!("{}{}", t.url(CR32), id))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    let x = r.text().await.unwrap();
    assert!(x.starts_with("<ConnectionRequest xmlns:xsd="), "{x}");
    // Unknown id → 404.
    for bad in ["00000000-0000-4000-8000-000000000000", "not-a-uuid"] {
        let r = t
            .http
            .get(format!("{}{}", t.url(CR32), bad))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{bad}");
    }
}

#[tokio::test]
async fn v31_and_v30_shapes() {
    let t = start().await;
    let (id, _) = one_user(&t).await;
    let tok = t.app_token().await;
    let v31: Value = t
        .http
        .get(t.url("/api/v3.1/common/connectionrequests"))
        .bearer_auth(&tok)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let i = &v31["Items"][0];
    assert_eq!(i["ID"], id.as_str());
    assert_eq!(i["FirstName"], "Maria");
    assert_eq!(i["EmailAddresses"]["Email1"], "maria@example.com");
    assert!(i["EmailAddresses"]["Email5"].is_null());
    assert!(i.get("userId").is_none() && i.get("firstName").is_none());
    assert!(i["URI"]
        .as_str()
        .unwrap()
        .contains("/api/v3.1/common/connectionrequests/"));
    // v3.0, with the capitalised path of its page.
    let r = t
        .http
        .get(t.url("/api/v3.0/Common/ConnectionRequests?limit=2"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let x = r.text().await.unwrap();
    for part in [
        "<FirstName>Maria</FirstName>",
        "<DiscountCode xsi:nil=\"true\" />",
        "<Message xsi:nil=\"true\" />",
        "<RequestToken>",
        "<LoyaltyNumber>23242526</LoyaltyNumber>",
    ] {
        assert!(x.contains(part), "{part} in {x}");
    }
    assert!(!x.contains("Email"), "{x}");
    let v30: Value = t
        .http
        .get(t.url("/api/v3.0/common/connectionrequests/"))
        .bearer_auth(&tok)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let i = &v30["Items"][0];
    assert!(i["DiscountCode"].is_null() && i["Message"].is_null());
    assert_eq!(
        i["Status"], "processing",
        "returned before: a token was generated"
    );
    // v3.0 PUT with the XML body of its page.
    let body = format!(
        r#"<ConnectionRequest xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><ID>{id}</ID><FirstName>Maria</FirstName><MiddleName /><DiscountCode xsi:nil="true" /><Status>CREU1</Status><Message /></ConnectionRequest>"#
    );
    let r = t
        .http
        .put(t.url(&format!("/api/v3.0/common/ConnectionRequests/{id}")))
        .bearer_auth(&tok)
        .header("Content-Type", "application/xml")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let adm = t.admin_request(&id).await;
    assert_eq!(adm["history"][0]["status"], "CREU1");
    assert_eq!(adm["history"][0]["version"], "3.0");
    // v3.0/3.1 status filter.
    let retry: Value = t
        .http
        .get(t.url("/api/v3.1/common/connectionrequests?status=retry"))
        .bearer_auth(&tok)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(retry["Items"][0]["Status"], "Retry");
    let pending: Value = t
        .http
        .get(t.url("/api/v3.1/common/connectionrequests?status=Pending"))
        .bearer_auth(&tok)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pending["Items"].as_array().unwrap().len(), 0);
    let r = t
        .http
        .get(t.url("/api/v3.1/common/connectionrequests?status=bogus"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn put_bodies() {
    let t = start().await;
    let ids = t.users(4).await;
    let tok = t.app_token().await;
    let put = |id: String, ct: Option<&'static str>, body: &'static str| {
        let t = &t;
        let tok = tok.clone();
        async move {
            let mut r = t
                .http
                .put(format!("{}{}", t.url(CR32), id))
                .bearer_auth(tok)
                .body(body);
            if let Some(ct) = ct {
                r = r.header("Content-Type", ct);
            }
            r.send().await.unwrap().status()
        }
    };
    let j = Some("application/json");
    for bad in [
        "",
        "{}",
        "{\"status\": \"OK\"}",
        "{\"status\": \"crsuc\"}",
        "{\"status\": 5}",
        "[\"CRSUC\"]",
        "{\"status\":",
    ] {
        assert_eq!(
            put(ids[0].clone(), j, bad).await,
            StatusCode::BAD_REQUEST,
            "{bad:?}"
        );
    }
    assert_eq!(
        put(
            ids[0].clone(),
            Some("application/xml"),
            "<ConnectionRequest><Status>NOPE</Status></ConnectionRequest>"
        )
        .await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        put(
            ids[0].clone(),
            Some("application/xml"),
            "<ConnectionRequest>"
        )
        .await,
        StatusCode::BAD_REQUEST
    );
    // Nothing was recorded for invalid bodies.
    assert_eq!(
        t.admin_request(&ids[0]).await["history"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // Unknown id → 404 (before looking at the body).
    assert_eq!(
        put(
            "00000000-0000-4000-8000-000000000000".into(),
            j,
            "{\"status\":\"CRSUC\"}"
        )
        .await,
        StatusCode::NOT_FOUND
    );
    // Accepted shapes.
    assert_eq!(
        put(ids[0].clone(), j, "{\"status\":\"CRSUC\"}").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        put(ids[1].clone(), j, "{\"Status\":\"CRRET\",\"ID\":\"x\"}").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        put(
            ids[2].clone(),
            Some("application/xml; charset=utf-8"),
            "<ConnectionRequest><status>CREU3</status></ConnectionRequest>"
        )
        .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        put(ids[3].clone(), None, "{\"status\":\"CRPA1\"}").await,
        StatusCode::NO_CONTENT
    );
    let states: Vec<String> = {
        let mut v = Vec::new();
        for id in &ids {
            v.push(
                t.admin_request(id).await["state"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        v
    };
    assert_eq!(
        states,
        [
            "connected",
            "requeued-waiting",
            "requeued-waiting",
            "requeued-waiting"
        ]
    );
    // v3.1 PUT path.
    let r = t
        .http
        .put(t.url(&format!("/api/v3.1/common/connectionrequests/{}", ids[0])))
        .bearer_auth(&tok)
        .json(&json!({"Status": "CRSUC"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "already connected");
}

#[tokio::test]
async fn create_on_behalf_of_a_user() {
    let t = start().await;
    let v: Value = t
        .http
        .post(t.url("/_sandbox/users"))
        .json(&json!({"login_id": "ann@example.com", "last_name": "Lee", "with_request": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v["users"][0]["request_id"].is_null());
    let tok = t.app_token().await;
    let post = |q: &'static str| {
        let t = &t;
        let tok = tok.clone();
        async move {
            t.http
                .post(format!("{}{}", t.url(CR32), q))
                .bearer_auth(tok)
                .header("Accept", "application/json")
                .header("Content-Length", "0")
                .send()
                .await
                .unwrap()
        }
    };
    let r = post("?user=ann@example.com").await;
    assert_eq!(r.status(), StatusCode::OK);
    let created: Value = r.json().await.unwrap();
    let id = created["ID"].as_str().unwrap().to_string();
    assert!(created["URI"].as_str().unwrap().ends_with(&id));
    assert_eq!(
        post("?user=ann@example.com").await.status(),
        StatusCode::CONFLICT
    );
    assert_eq!(
        post("?user=nobody@example.com").await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(post("").await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(t.page(&tok, "").await.0, vec![id.clone()]);
    // Once connected, a new request can be created.
    t.put(&tok, &id, "CRSUC").await;
    assert_eq!(post("?user=ANN@example.com").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let t = start().await;
    let tok = t.app_token().await;
    let r = t
        .http
        .get(t.url("/api/v4.0/common/connectionrequests"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = t
        .http
        .delete(t.url(CR32))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.headers().contains_key("allow"));
    let r = t.http.get(t.url("/nothing")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Every response carries a correlation id.
    assert!(uuid_like(
        r.headers()["concur-correlationid"].to_str().unwrap()
    ));
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test]
async fn chunked_transfer_encoding_is_refused() {
    // The HTTP status codes page: Concur does not support Chunked Transfer-Encoding.
    let t = start().await;
    let ids = t.users(1).await;
    let tok = t.app_token().await;
    let body = "{\"status\":\"CRSUC\"}";
    let req = format!(
        "PUT /api/v3.2/common/connectionrequests/{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        ids[0],
        body.len()
    );
    let mut s = tokio::net::TcpStream::connect(t.sb.addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert_eq!(t.admin_request(&ids[0]).await["state"], "pending");
}
