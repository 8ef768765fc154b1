//! Helpers shared by the integration tests: an in-process sandbox and a client.
#![allow(dead_code)]

use concur_sandbox::{spawn, Config, Sandbox};
use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};

pub const CR32: &str = "/api/v3.2/common/connectionrequests/";

pub struct T {
    pub sb: Sandbox,
    pub http: Client,
}

pub async fn start() -> T {
    start_with(Config::for_tests()).await
}

pub async fn start_with(config: Config) -> T {
    let sb = spawn(config).await.expect("sandbox starts");
    // The workspace's reqwest has no built-in crypto provider (the functions bring ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = Client::builder().build().expect("client");
    T { sb, http }
}

impl T {
    pub fn url(&self, path: &str) -> String {
        self.sb.url(path)
    }

    pub async fn token_form(&self, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let r = self
            .http
            .post(self.url("/oauth2/v0/token"))
            .form(form)
            .send()
            .await
            .expect("token call");
        let s = r.status();
        let v = r.json::<Value>().await.unwrap_or(Value::Null);
        (s, v)
    }

    pub async fn app_token(&self) -> String {
        let (s, v) = self
            .token_form(&[
                ("client_id", "sandbox-client"),
                ("client_secret", "sandbox-secret"),
                ("grant_type", "client_credentials"),
            ])
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    /// Creates `n` generic users, each with one pending request; returns the request ids.
    pub async fn users(&self, n: usize) -> Vec<String> {
        let v: Value = self
            .http
            .post(self.url("/_sandbox/users"))
            .json(&json!({ "count": n }))
            .send()
            .await
            .expect("users")
            .json()
            .await
            .expect("json");
        v["users"]
            .as_array()
            .expect("users array")
            .iter()
            .map(|u| u["request_id"].as_str().expect("request id").to_string())
            .collect()
    }

    /// GET a page in JSON; returns (ids, NextPage, full body).
    pub async fn page(&self, token: &str, query: &str) -> (Vec<String>, Option<String>, Value) {
        let r = self
            .http
            .get(format!("{}{}", self.url(CR32), query))
            .bearer_auth(token)
            .header("Accept", "application/json")
            .send()
            .await
            .expect("list");
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.expect("json page");
        let ids = v["Items"]
            .as_array()
            .expect("Items array")
            .iter()
            .map(|i| i["ID"].as_str().expect("ID").to_string())
            .collect();
        let next = v["NextPage"].as_str().map(str::to_string);
        (ids, next, v)
    }

    pub async fn put(&self, token: &str, id: &str, status: &str) -> Response {
        self.http
            .put(format!("{}{}", self.url(CR32), id))
            .bearer_auth(token)
            .json(&json!({ "status": status }))
            .send()
            .await
            .expect("put")
    }

    pub async fn advance(&self, seconds: i64) {
        let r = self
            .http
            .post(self.url("/_sandbox/clock/advance"))
            .json(&json!({ "seconds": seconds }))
            .send()
            .await
            .expect("advance");
        assert_eq!(r.status(), StatusCode::OK);
    }

    pub async fn admin_request(&self, id: &str) -> Value {
        self.http
            .get(self.url(&format!("/_sandbox/requests/{id}")))
            .send()
            .await
            .expect("admin request")
            .json()
            .await
            .expect("json")
    }

    pub async fn admin_get(&self, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("admin get")
            .json()
            .await
            .expect("json")
    }

    pub async fn set_faults(&self, rules: &[&str]) -> StatusCode {
        self.http
            .post(self.url("/_sandbox/faults"))
            .json(&json!({ "rules": rules, "replace": true }))
            .send()
            .await
            .expect("faults")
            .status()
    }
}

/// `offset=N` from a NextPage URL.
pub fn offset_of(next: &str) -> i64 {
    next.split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("offset="))
        .and_then(|v| v.parse().ok())
        .expect("offset in NextPage")
}
