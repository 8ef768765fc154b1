//! The Concur client against a real HTTP server on loopback (wiremock), for every
//! response class, token caching and refresh, paging, the foreign-host NextPage and the
//! deadline.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio::time::Instant;
use triplink_shared::concur::{
    ApiVersion, BaseUrl, ConcurClient, ConcurConfig, ConcurError, OAuthErrorKind, RetryPolicy,
    CONCUR_PAUSE,
};
use triplink_shared::model::ConnectionStatus;
use wiremock::matchers::{body_string, body_string_contains, header, method, path, query_param};
use wiremock::{Mock, MockBuilder, MockServer, Request, ResponseTemplate};

const LIST: &str = "/api/v3.2/common/connectionrequests/";
const TOKEN: &str = "/oauth2/v0/token";

fn config(server: &MockServer) -> ConcurConfig {
    let base = BaseUrl::parse(&server.uri()).unwrap();
    let mut config = ConcurConfig::new(base, "client-1", SecretString::from("s3cret"));
    config.retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
    };
    config.call_timeout = Duration::from_secs(2);
    config
}

fn client(server: &MockServer) -> ConcurClient {
    ConcurClient::new(config(server)).unwrap()
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

/// An app token answer without a geolocation: its calls go to the configured base
/// (the geolocation tests below give one).
fn token_body(token: &str, expires_in: &str) -> serde_json::Value {
    json!({
        "expires_in": expires_in,
        "scope": "app-scopes",
        "token_type": "Bearer",
        "access_token": token
    })
}

async fn app_token(server: &MockServer, token: &str) {
    on("POST", TOKEN)
        .and(body_string_contains("grant_type=client_credentials"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body(token, "3600")))
        .mount(server)
        .await;
}

fn item(id: &str) -> serde_json::Value {
    json!({
        "firstName": "First", "middleName": null, "lastName": "Last", "loyaltyNumber": "1234",
        "status": "Pending", "requestToken": format!("rt-{id}"), "lastModified": "2022-11-09T05:57:29",
        "emailAddresses": {"email1": "a@example.com", "email2": null, "email3": null, "email4": null, "email5": null},
        "userId": format!("user-{id}"), "ID": id,
        "URI": format!("https://us.api.concursolutions.com{LIST}{id}")
    })
}

fn page(ids: &[&str], next: Option<String>) -> serde_json::Value {
    json!({ "Items": ids.iter().map(|id| item(id)).collect::<Vec<_>>(), "NextPage": next })
}

/// A mock of `verb path` (chain matchers and the answer on it).
fn on(verb: &str, p: impl Into<String>) -> MockBuilder {
    Mock::given(method(verb)).and(path(p))
}

/// A client whose authtoken grants go to `glz` and every other call to `api`.
fn authtoken_client(api: &MockServer, glz: &MockServer) -> ConcurClient {
    let mut config = config(api);
    config.authtoken_base = BaseUrl::parse(&glz.uri()).unwrap();
    ConcurClient::new(config).unwrap()
}

/// A server with an app token (`t`) whose `GET path` answers `response`.
async fn api_server(p: impl Into<String>, response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    app_token(&server, "t").await;
    on("GET", p).respond_with(response).mount(&server).await;
    server
}

/// A server whose `GET {LIST}slow` answers after two seconds.
async fn slow_server() -> MockServer {
    let slow = ResponseTemplate::new(200)
        .set_body_json(item("slow"))
        .set_delay(Duration::from_secs(2));
    api_server(format!("{LIST}slow"), slow).await
}

/// A request token exchange against a server whose token endpoint answers `answer`
/// (given the server, for answers that name it): the error it ends in. The server
/// checks on drop that the grant was sent exactly once (never retried).
async fn exchange_error(answer: impl FnOnce(&MockServer) -> ResponseTemplate) -> ConcurError {
    let server = MockServer::start().await;
    on("POST", TOKEN)
        .respond_with(answer(&server))
        .expect(1)
        .mount(&server)
        .await;
    client(&server)
        .exchange_request_token("u", &SecretString::from("rt"), soon())
        .await
        .unwrap_err()
}

async fn requests_to(server: &MockServer, p: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == p)
        .collect()
}

// ----- app token ------------------------------------------------------------------------

#[tokio::test]
async fn app_token_is_a_form_encoded_client_credentials_grant_and_is_cached() {
    let server = MockServer::start().await;
    on("POST", TOKEN)
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string(
            "client_id=client-1&client_secret=s3cret&grant_type=client_credentials",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("app-1", "3600")))
        .expect(1)
        .mount(&server)
        .await;
    on("GET", LIST)
        .and(header("authorization", "Bearer app-1"))
        .and(header("accept", "application/json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(&["a"], None)))
        .expect(2)
        .mount(&server)
        .await;
    let client = client(&server);
    for _ in 0..2 {
        let page = client.list_page(10, None, soon()).await.unwrap();
        assert_eq!(page.items.len(), 1);
    }
    // `expect` counts are verified when the server drops.
}

#[tokio::test]
async fn app_token_is_refreshed_before_it_expires() {
    let server = MockServer::start().await;
    on("POST", TOKEN)
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("short", "2")))
        .expect(2)
        .mount(&server)
        .await;
    let mut config = config(&server);
    config.token_refresh_margin = Duration::from_secs(1);
    let client = ConcurClient::new(config).unwrap();
    let first = client.app_token(soon()).await.unwrap();
    let cached = client.app_token(soon()).await.unwrap();
    assert_eq!(first.expose_secret(), cached.expose_secret());
    assert_eq!(
        requests_to(&server, TOKEN).await.len(),
        1,
        "second read is cached"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    client.app_token(soon()).await.unwrap();
    assert_eq!(
        requests_to(&server, TOKEN).await.len(),
        2,
        "refreshed one second before its 2 s lifetime ends"
    );
}

#[tokio::test]
async fn a_401_refreshes_the_app_token_once_then_succeeds() {
    let server = MockServer::start().await;
    on("POST", TOKEN)
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("old", "3600")))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    app_token(&server, "new").await;
    on("GET", LIST)
        .and(header("authorization", "Bearer old"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    on("GET", LIST)
        .and(header("authorization", "Bearer new"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(&["x"], None)))
        .mount(&server)
        .await;
    let page = client(&server).list_page(5, None, soon()).await.unwrap();
    assert_eq!(page.items[0].id, "x");
    assert_eq!(requests_to(&server, TOKEN).await.len(), 2);
    assert_eq!(requests_to(&server, LIST).await.len(), 2);
}

#[tokio::test]
async fn a_second_401_or_403_is_a_clear_auth_error_with_the_correlation_id() {
    for (status, want) in [(401, "unauthorized"), (403, "forbidden")] {
        let server = api_server(
            LIST,
            ResponseTemplate::new(status).insert_header("concur-correlationid", "corr-auth"),
        )
        .await;
        let err = client(&server)
            .list_page(5, None, soon())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), want);
        assert!(err.is_auth());
        assert_eq!(err.correlation_id(), Some("corr-auth"));
        assert_eq!(
            requests_to(&server, TOKEN).await.len(),
            2,
            "one refresh only"
        );
        assert_eq!(requests_to(&server, LIST).await.len(), 2);
    }
}

#[tokio::test]
async fn bad_client_secret_is_a_typed_oauth_error_without_retries() {
    let server = MockServer::start().await;
    on("POST", TOKEN)
        .respond_with(
            ResponseTemplate::new(401)
                .insert_header("concur-correlationid", "corr-oauth")
                .set_body_json(json!({"code": 64, "error": "invalid_client", "error_description": "Incorrect credentials. Please Retry"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server).app_token(soon()).await.unwrap_err();
    match &err {
        ConcurError::OAuth { error, info } => {
            assert_eq!(error.kind(), OAuthErrorKind::InvalidCredentials);
            assert_eq!(info.status, Some(401));
        }
        other => panic!("expected OAuth error, got {other:?}"),
    }
    assert_eq!(err.correlation_id(), Some("corr-oauth"));
    assert!(err.to_string().contains("code 64"));
}

// ----- response classes -------------------------------------------------------------

async fn error_for(template: ResponseTemplate) -> (ConcurError, usize) {
    let server = api_server(format!("{LIST}some-id"), template).await;
    let err = client(&server).get("some-id", soon()).await.unwrap_err();
    let calls = requests_to(&server, &format!("{LIST}some-id")).await.len();
    (err, calls)
}

#[tokio::test]
async fn not_found_and_bad_request_are_typed_and_not_retried() {
    let (err, calls) =
        error_for(ResponseTemplate::new(404).insert_header("concur-correlationid", "c404")).await;
    assert!(matches!(err, ConcurError::NotFound { .. }), "{err:?}");
    assert_eq!(err.correlation_id(), Some("c404"));
    assert_eq!(calls, 1);

    let (err, calls) = error_for(
        ResponseTemplate::new(400)
            .set_body_json(json!({"Error": {"Message": "Invalid status", "Id": "E400"}})),
    )
    .await;
    match &err {
        ConcurError::BadRequest { message, .. } => {
            assert_eq!(message.as_deref(), Some("Invalid status"))
        }
        other => panic!("expected BadRequest, got {other:?}"),
    }
    assert_eq!(calls, 1);
}

#[tokio::test]
async fn server_errors_other_than_503_are_retried_up_to_the_policy_then_returned() {
    for status in [500, 502, 504] {
        let (err, calls) =
            error_for(ResponseTemplate::new(status).insert_header("concur-correlationid", "c5xx"))
                .await;
        assert!(matches!(err, ConcurError::Unavailable { .. }), "{err:?}");
        assert!(err.is_transient());
        assert_eq!(err.pause(), None, "{status}");
        assert_eq!(err.correlation_id(), Some("c5xx"));
        assert_eq!(calls, 3, "{status}: max_attempts = 3");
    }
}

#[tokio::test]
async fn a_503_is_returned_at_once_with_a_five_minute_pause() {
    let (err, calls) =
        error_for(ResponseTemplate::new(503).insert_header("concur-correlationid", "c503")).await;
    assert!(matches!(err, ConcurError::Unavailable { .. }), "{err:?}");
    assert_eq!(err.correlation_id(), Some("c503"));
    assert_eq!(err.pause(), Some(Duration::from_secs(300)));
    assert_eq!(err.pause(), Some(CONCUR_PAUSE));
    assert_eq!(calls, 1, "a 503 is never retried within the call");
}

#[tokio::test]
async fn a_timeout_is_returned_at_once_with_a_five_minute_pause() {
    let server = slow_server().await;
    let mut config = config(&server);
    config.call_timeout = Duration::from_millis(200);
    let started = std::time::Instant::now();
    let err = ConcurClient::new(config)
        .unwrap()
        .get("slow", soon())
        .await
        .unwrap_err();
    assert!(matches!(err, ConcurError::Timeout { .. }), "{err:?}");
    assert_eq!(err.pause(), Some(CONCUR_PAUSE));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no retry waited"
    );
    assert_eq!(
        requests_to(&server, &format!("{LIST}slow")).await.len(),
        1,
        "a timeout is never retried within the call (max_attempts = 3)"
    );
}

#[tokio::test]
async fn a_wait_cut_short_by_the_callers_deadline_asks_for_no_pause() {
    let server = slow_server().await;
    // The default call timeout (60 s), a deadline 500 ms away.
    let base = BaseUrl::parse(&server.uri()).unwrap();
    let config = ConcurConfig::new(base, "client-1", SecretString::from("s3cret"));
    assert_eq!(config.call_timeout, Duration::from_secs(60));
    let client = ConcurClient::new(config).unwrap();
    client.app_token(soon()).await.unwrap();
    let err = client
        .get("slow", Instant::now() + Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConcurError::Timeout {
                cut_short: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.pause(), None, "Concur was not given its 60 s");
    assert_eq!(requests_to(&server, &format!("{LIST}slow")).await.len(), 1);
}

#[tokio::test]
async fn a_broken_connection_is_still_retried() {
    let server = MockServer::start().await;
    app_token(&server, "t").await;
    // The first two answers promise more body than they send: the connection breaks.
    on("GET", format!("{LIST}flaky"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-length", "500")
                .set_body_string("{"),
        )
        .up_to_n_times(2)
        .mount(&server)
        .await;
    on("GET", format!("{LIST}flaky"))
        .respond_with(ResponseTemplate::new(200).set_body_json(item("flaky")))
        .mount(&server)
        .await;
    let request = client(&server).get("flaky", soon()).await;
    let calls = requests_to(&server, &format!("{LIST}flaky")).await.len();
    match request {
        Ok(request) => {
            assert_eq!(request.id, "flaky");
            assert_eq!(calls, 3);
        }
        Err(e) => panic!("expected a recovery after {calls} calls, got {e:?}"),
    }
}

#[tokio::test]
async fn unavailable_then_success_recovers() {
    let server = MockServer::start().await;
    app_token(&server, "t").await;
    on("GET", LIST)
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    on("GET", LIST)
        .respond_with(ResponseTemplate::new(200).set_body_json(page(&["ok"], None)))
        .mount(&server)
        .await;
    let page = client(&server).list_page(10, None, soon()).await.unwrap();
    assert_eq!(page.items[0].id, "ok");
    assert_eq!(requests_to(&server, LIST).await.len(), 3);
}

#[tokio::test]
async fn rate_limiting_honours_retry_after() {
    let server = MockServer::start().await;
    app_token(&server, "t").await;
    on("GET", LIST)
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    on("GET", LIST)
        .respond_with(ResponseTemplate::new(200).set_body_json(page(&["r"], None)))
        .mount(&server)
        .await;
    let started = std::time::Instant::now();
    let page = client(&server).list_page(10, None, soon()).await.unwrap();
    assert_eq!(page.items[0].id, "r");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited {:?}, less than Retry-After",
        started.elapsed()
    );
}

#[tokio::test]
async fn rate_limiting_past_the_deadline_returns_the_retry_after() {
    let server = api_server(
        LIST,
        ResponseTemplate::new(429)
            .insert_header("retry-after", "120")
            .insert_header("concur-correlationid", "c429"),
    )
    .await;
    let started = std::time::Instant::now();
    let err = client(&server)
        .list_page(10, None, soon())
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "did not wait past the deadline"
    );
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
    assert_eq!(err.correlation_id(), Some("c429"));
    assert_eq!(requests_to(&server, LIST).await.len(), 1);
}

#[tokio::test]
async fn a_slow_server_is_a_timeout() {
    let server = api_server(
        LIST,
        ResponseTemplate::new(200)
            .set_body_json(page(&[], None))
            .set_delay(Duration::from_secs(3)),
    )
    .await;
    let mut config = config(&server);
    config.call_timeout = Duration::from_millis(200);
    config.retry = RetryPolicy::none();
    let err = ConcurClient::new(config)
        .unwrap()
        .list_page(10, None, soon())
        .await
        .unwrap_err();
    assert!(matches!(err, ConcurError::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn a_refused_connection_is_a_connection_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let base = BaseUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let mut config = ConcurConfig::new(base, "c", SecretString::from("s"));
    config.retry = RetryPolicy::none();
    let err = ConcurClient::new(config)
        .unwrap()
        .app_token(soon())
        .await
        .unwrap_err();
    assert!(matches!(err, ConcurError::Connection { .. }), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn malformed_payloads_are_typed() {
    for body in ["{\"Items\": [", "[1,2]"] {
        let server = api_server(
            LIST,
            ResponseTemplate::new(200)
                .insert_header("content-type", "application/json")
                .insert_header("concur-correlationid", "cmal")
                .set_body_string(body),
        )
        .await;
        let err = client(&server)
            .list_page(10, None, soon())
            .await
            .unwrap_err();
        assert!(
            matches!(err, ConcurError::Malformed { .. }),
            "{body}: {err:?}"
        );
        assert_eq!(err.correlation_id(), Some("cmal"));
    }
}

#[tokio::test]
async fn an_item_with_an_unknown_status_or_without_an_id_does_not_fail_the_page() {
    let server = api_server(LIST, ResponseTemplate::new(200)
                .insert_header("content-type", "application/json")
                .set_body_string(
                    r#"{"Items":[{"ID":"a","status":"Bogus"},{"lastName":"x"},{"ID":"b"}],"NextPage":null}"#,
                ),).await;
    let page = client(&server).list_page(10, None, soon()).await.unwrap();
    let ids: Vec<_> = page.items.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(page.degraded.len(), 1);
    assert_eq!(page.degraded[0].ignored, ["status"]);
    assert_eq!(page.quarantined.len(), 1);
    assert_eq!(page.quarantined[0].reason, "missing_id");
}

#[tokio::test]
async fn http_200_with_an_error_body_is_an_error_in_json_and_xml() {
    for (content_type, body) in [
        (
            "application/json",
            r#"{"Error":{"Message":"Internal failure","Server-Time":"2022-11-02T09:39:21","Id":"ERR-9"}}"#,
        ),
        (
            "application/xml",
            "<Error><Message>Internal failure</Message><Server-Time>x</Server-Time><Id>ERR-9</Id></Error>",
        ),
    ] {
        let server = api_server(LIST, ResponseTemplate::new(200)
                    .insert_header("content-type", content_type)
                    .insert_header("concur-correlationid", "c200")
                    .set_body_string(body),).await;
        let err = client(&server).list_page(10, None, soon()).await.unwrap_err();
        match &err {
            ConcurError::ErrorBody {
                message, error_id, ..
            } => {
                assert_eq!(message.as_deref(), Some("Internal failure"));
                assert_eq!(error_id.as_deref(), Some("ERR-9"));
            }
            other => panic!("{content_type}: expected ErrorBody, got {other:?}"),
        }
        assert_eq!(err.correlation_id(), Some("c200"));
    }
}

// ----- paging ------------------------------------------------------------------------

#[tokio::test]
async fn pages_follow_next_page_offsets_to_the_end() {
    let server = MockServer::start().await;
    app_token(&server, "t").await;
    let next = |offset: u32| Some(format!("{}{LIST}?limit=2&offset={offset}", server.uri()));
    for (offset, ids, following) in [
        (None, vec!["a", "b"], next(2)),
        (Some("2"), vec!["c", "d"], next(4)),
        (Some("4"), vec!["e"], None),
    ] {
        let mut mock = on("GET", LIST).and(query_param("limit", "2"));
        mock = match offset {
            Some(o) => mock.and(query_param("offset", o)),
            None => mock.and(wiremock::matchers::query_param_is_missing("offset")),
        };
        mock.respond_with(ResponseTemplate::new(200).set_body_json(page(&ids, following)))
            .expect(1)
            .mount(&server)
            .await;
    }
    let client = client(&server);
    let mut pager = client.pages(2);
    let mut seen = Vec::new();
    while let Some(page) = pager.next_page(soon()).await {
        seen.extend(page.unwrap().items.into_iter().map(|i| i.id));
        assert!(seen.len() <= 5, "pager ran past the end");
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    assert!(pager.next_page(soon()).await.is_none(), "stays done");
}

#[tokio::test]
async fn a_foreign_host_next_page_gives_only_its_offset() {
    let server = MockServer::start().await;
    app_token(&server, "t").await;
    on("GET", LIST)
        .and(wiremock::matchers::query_param_is_missing("offset"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            &["a"],
            Some(format!(
                "https://integration.concursolutions.com{LIST}?limit=1&offset=1"
            )),
        )))
        .mount(&server)
        .await;
    on("GET", LIST)
        .and(query_param("offset", "1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(&["b"], None)))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let mut pager = client.pages(1);
    let first = pager.next_page(soon()).await.unwrap().unwrap();
    assert_eq!(first.next_offset.as_deref(), Some("1"));
    // The foreign host is reported with the page, for the caller to log once per run.
    let called = url::Url::parse(&server.uri()).unwrap();
    assert_eq!(
        first.foreign_next_page,
        Some(triplink_shared::concur::ForeignNextPage {
            next_page_host: "integration.concursolutions.com".into(),
            api_host: called.host_str().unwrap().into(),
        })
    );
    // The item's URI names another host too: the id comes from `ID`.
    assert_eq!(first.items[0].id, "a");
    let second = pager.next_page(soon()).await.unwrap().unwrap();
    assert_eq!(second.items[0].id, "b");
    assert_eq!(
        second.foreign_next_page, None,
        "a last page has no NextPage"
    );
    // Every request reached the configured server, none the foreign host.
    assert_eq!(requests_to(&server, LIST).await.len(), 2);
}

#[tokio::test]
async fn xml_is_read_when_the_server_ignores_accept_json() {
    let server = MockServer::start().await;
    app_token(&server, "t").await;
    let fixture = std::fs::read_to_string(format!(
        "{}/tests/fixtures/v32_list.xml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    on("GET", LIST)
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "application/xml; charset=utf-8")
                .set_body_string(fixture),
        )
        .mount(&server)
        .await;
    let page = client(&server).list_page(2, None, soon()).await.unwrap();
    assert_eq!(page.items.len(), 2);
    assert_eq!(page.items[1].id, "5d2804fb-111b-44a8-98bb-56e387875aed");
    assert_eq!(page.next_offset.as_deref(), Some("2"));
}

#[tokio::test]
async fn a_next_page_without_an_integer_offset_is_malformed() {
    let server = MockServer::start().await;
    app_token(&server, "t").await;
    on("GET", LIST)
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            &["a"],
            Some(format!("{}{LIST}?limit=1&offset=abc", server.uri())),
        )))
        .mount(&server)
        .await;
    let err = client(&server)
        .list_page(1, None, soon())
        .await
        .unwrap_err();
    assert!(matches!(err, ConcurError::Malformed { .. }), "{err:?}");
}

#[tokio::test]
async fn limits_and_offsets_are_checked_before_any_call() {
    let server = MockServer::start().await;
    let client = client(&server);
    for limit in [0, 11] {
        let err = client.list_page(limit, None, soon()).await.unwrap_err();
        assert!(matches!(err, ConcurError::Invalid(_)), "{limit}");
    }
    let err = client.list_page(5, Some("-1"), soon()).await.unwrap_err();
    assert!(matches!(err, ConcurError::Invalid(_)));
    assert!(server.received_requests().await.unwrap().is_empty());
}

// ----- the deadline ----------------------------------------------------------------

#[tokio::test]
async fn a_passed_deadline_sends_nothing() {
    let server = MockServer::start().await;
    let err = client(&server)
        .list_page(10, None, Instant::now())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConcurError::DeadlineExceeded { .. }),
        "{err:?}"
    );
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_deadline_bounds_retries_and_slow_answers() {
    let server = api_server(
        LIST,
        ResponseTemplate::new(500).set_delay(Duration::from_millis(300)),
    )
    .await;
    let mut config = config(&server);
    config.retry = RetryPolicy {
        max_attempts: 100,
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(100),
    };
    let client = ConcurClient::new(config).unwrap();
    let started = std::time::Instant::now();
    let err = client
        .list_page(10, None, Instant::now() + Duration::from_millis(1000))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        err.is_transient() || matches!(err, ConcurError::DeadlineExceeded { .. }),
        "{err:?}"
    );
    assert!(
        elapsed < Duration::from_millis(1500),
        "ran {elapsed:?} past a 1 s deadline"
    );
    let calls = requests_to(&server, LIST).await.len();
    assert!((2..=5).contains(&calls), "{calls} calls in 1 s");
}

// ----- status updates and other calls ----------------------------------------------

#[tokio::test]
async fn status_updates_send_each_versions_body() {
    for (version, content_type, body) in [
        (
            ApiVersion::V3_2,
            "application/json",
            r#"{"status":"CRSUC"}"#.to_owned(),
        ),
        (
            ApiVersion::V3_1,
            "application/json",
            r#"{"Status":"CRSUC"}"#.to_owned(),
        ),
        (
            ApiVersion::V3_0,
            "application/xml",
            ApiVersion::V3_0
                .status_body("id-1", ConnectionStatus::Connected)
                .1,
        ),
    ] {
        let server = MockServer::start().await;
        app_token(&server, "t").await;
        Mock::given(method("PUT"))
            .and(path(format!(
                "/api/v{}/common/connectionrequests/id-1",
                version.as_str()
            )))
            .and(header("content-type", content_type))
            .and(body_string(body))
            .respond_with(ResponseTemplate::new(204))
            .expect(1)
            .mount(&server)
            .await;
        let mut config = config(&server);
        config.version = version;
        ConcurClient::new(config)
            .unwrap()
            .update_status("id-1", ConnectionStatus::Connected, soon())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn status_update_is_not_retried_after_a_503() {
    let server = MockServer::start().await;
    app_token(&server, "t").await;
    on("PUT", format!("{LIST}id-3"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let err = client(&server)
        .update_status("id-3", ConnectionStatus::Connected, soon())
        .await
        .unwrap_err();
    assert_eq!(err.pause(), Some(CONCUR_PAUSE), "{err:?}");
    assert_eq!(requests_to(&server, &format!("{LIST}id-3")).await.len(), 1);
}

#[tokio::test]
async fn status_update_is_retried_after_a_502_and_refuses_non_partner_statuses() {
    let server = MockServer::start().await;
    app_token(&server, "t").await;
    on("PUT", format!("{LIST}id-2"))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    on("PUT", format!("{LIST}id-2"))
        .and(body_string(r#"{"status":"CREU1"}"#))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    client
        .update_status("id-2", ConnectionStatus::AccountNotFound, soon())
        .await
        .unwrap();
    let err = client
        .update_status("id-2", ConnectionStatus::Pending, soon())
        .await
        .unwrap_err();
    assert!(matches!(err, ConcurError::Invalid(_)));
}

#[tokio::test]
async fn ids_are_path_encoded() {
    let server = MockServer::start().await;
    app_token(&server, "t").await;
    on("GET", format!("{LIST}a%2Fb%20c"))
        .respond_with(ResponseTemplate::new(200).set_body_json(item("a/b c")))
        .expect(1)
        .mount(&server)
        .await;
    let request = client(&server).get("a/b c", soon()).await.unwrap();
    assert_eq!(request.id, "a/b c");
    assert_eq!(request.user_id.as_deref(), Some("user-a/b c"));
}

#[tokio::test]
async fn create_for_user_posts_the_login_and_is_not_retried_after_a_timeout() {
    let server = MockServer::start().await;
    app_token(&server, "t").await;
    on("POST", LIST)
        .and(query_param("user", "someone@example.com"))
        .and(header("content-length", "0"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ID": "new-id", "URI": "https://x.concursolutions.com/y"})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let id = client
        .create_for_user("someone@example.com", soon())
        .await
        .unwrap();
    assert_eq!(id.as_deref(), Some("new-id"));

    let slow = MockServer::start().await;
    app_token(&slow, "t").await;
    on("POST", LIST)
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&slow)
        .await;
    let mut config = config(&slow);
    config.call_timeout = Duration::from_millis(200);
    let err = ConcurClient::new(config)
        .unwrap()
        .create_for_user("someone@example.com", soon())
        .await
        .unwrap_err();
    assert!(matches!(err, ConcurError::Timeout { .. }));
    assert_eq!(
        requests_to(&slow, LIST).await.len(),
        1,
        "a create is never sent twice"
    );
}

// ----- user tokens -----------------------------------------------------------------

fn id_token(sub: &str) -> String {
    use base64::Engine;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"sub": sub, "concur.type": "user"}).to_string());
    format!("eyJhbGciOiJub25lIn0.{payload}.sig")
}

#[tokio::test]
async fn request_token_exchange_goes_to_the_authtoken_base_with_credtype_authtoken() {
    let api = MockServer::start().await;
    let glz = MockServer::start().await;
    on("POST", TOKEN)
        .and(body_string(
            "client_id=client-1&client_secret=s3cret&grant_type=password&credtype=authtoken&username=user-9&password=req-tok",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "expires_in": "3600", "scope": "app-scopes", "token_type": "Bearer",
            "access_token": "user-access", "refresh_token": "user-refresh",
            "id_token": id_token("user-9-sub"), "geolocation": api.uri()
        })))
        .expect(1)
        .mount(&glz)
        .await;
    let tokens = authtoken_client(&api, &glz)
        .exchange_request_token("user-9", &SecretString::from("req-tok"), soon())
        .await
        .unwrap();
    assert_eq!(tokens.access_token.expose_secret(), "user-access");
    assert_eq!(tokens.refresh_token.expose_secret(), "user-refresh");
    assert_eq!(tokens.geolocation.as_str(), api.uri());
    assert_eq!(tokens.user_id.as_deref(), Some("user-9-sub"));
    assert_eq!(tokens.expires_in, Duration::from_secs(3600));
    let shown = format!("{tokens:?}");
    assert!(
        !shown.contains("user-access") && !shown.contains("user-refresh"),
        "{shown}"
    );
    assert!(
        requests_to(&api, TOKEN).await.is_empty(),
        "never sent to the API base"
    );
}

#[tokio::test]
async fn request_token_errors_are_typed_oauth_errors_and_never_retried() {
    for (code, kind) in [
        (103, OAuthErrorKind::CodeBadOrExpired),
        (108, OAuthErrorKind::RefreshTokenInvalid),
        (136, OAuthErrorKind::AuthTokenNotIssuedForYou),
    ] {
        // Even with a geolocation in the body (Concur sends one with every 4xx), only a
        // code 16 is followed there.
        let err = exchange_error(|server| {
            ResponseTemplate::new(400).set_body_json(json!({
                "code": code, "error": "invalid_request", "error_description": "nope",
                "geolocation": server.uri()
            }))
        })
        .await;
        match err {
            ConcurError::OAuth { error, .. } => assert_eq!(error.kind(), kind),
            other => panic!("expected OAuth {code}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_geolocation_outside_concur_is_refused_and_a_missing_one_is_malformed() {
    for (geolocation, want) in [
        (json!("https://evil.example.com"), "base_url"),
        (json!(null), "malformed"),
    ] {
        let err = exchange_error(|_| {
            ResponseTemplate::new(200).set_body_json(json!({
                "expires_in": "3600", "access_token": "a", "refresh_token": "r",
                "geolocation": geolocation
            }))
        })
        .await;
        assert_eq!(err.kind(), want, "{err}");
    }
}

#[tokio::test]
async fn refresh_returns_the_rotated_token_and_108_is_typed() {
    let server = MockServer::start().await;
    on("POST", TOKEN)
        .and(body_string_contains(
            "grant_type=refresh_token&refresh_token=old-refresh",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "expires_in": "3600", "access_token": "a2", "refresh_token": "new-refresh",
            "geolocation": server.uri()
        })))
        .mount(&server)
        .await;
    on("POST", TOKEN)
        .and(body_string_contains("refresh_token=revoked"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "code": 108, "error": "invalid_grant", "error_description": "bad or expired refresh token"
        })))
        .mount(&server)
        .await;
    let client = client(&server);
    let geolocation = BaseUrl::parse(&server.uri()).unwrap();
    let tokens = client
        .refresh_user_token(&geolocation, &SecretString::from("old-refresh"), soon())
        .await
        .unwrap();
    assert_eq!(tokens.refresh_token.expose_secret(), "new-refresh");
    assert_eq!(tokens.access_token.expose_secret(), "a2");
    let err = client
        .refresh_user_token(&geolocation, &SecretString::from("revoked"), soon())
        .await
        .unwrap_err();
    match err {
        ConcurError::OAuth { error, .. } => {
            assert_eq!(error.kind(), OAuthErrorKind::RefreshTokenInvalid)
        }
        other => panic!("expected 108, got {other:?}"),
    }
}

#[tokio::test]
async fn revoke_sends_delete_with_the_users_token() {
    let server = MockServer::start().await;
    on("DELETE", "/app-mgmt/v0/connections")
        .and(header("authorization", "Bearer user-access"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    client(&server)
        .revoke_connection(
            &BaseUrl::parse(&server.uri()).unwrap(),
            &SecretString::from("user-access"),
            soon(),
        )
        .await
        .unwrap();
}

#[test]
fn config_debug_never_shows_the_secret() {
    let config = ConcurConfig::new(
        BaseUrl::parse("https://us.api.concursolutions.com").unwrap(),
        "id",
        SecretString::from("very-secret-value"),
    );
    let shown = format!("{config:?}");
    assert!(!shown.contains("very-secret-value"), "{shown}");
    assert_eq!(config.authtoken_base.host(), "glz.api.concursolutions.com");
}

// ----- code 16: the user lives elsewhere -----------------------------------------------

fn user_token_body(geolocation: &str) -> serde_json::Value {
    json!({
        "expires_in": "3600", "scope": "app-scopes", "token_type": "Bearer",
        "access_token": "user-access", "refresh_token": "user-refresh",
        "id_token": id_token("user-16"), "geolocation": geolocation
    })
}

fn lives_elsewhere(geolocation: &str) -> ResponseTemplate {
    ResponseTemplate::new(400)
        .insert_header("concur-correlationid", "c16")
        .set_body_json(json!({
            "code": 16, "error": "invalid_request", "error_description": "user lives elsewhere",
            "geolocation": geolocation
        }))
}

#[tokio::test]
async fn code_16_is_followed_once_to_the_users_geolocation() {
    let glz = MockServer::start().await;
    let home = MockServer::start().await;
    on("POST", TOKEN)
        .respond_with(lives_elsewhere(&home.uri()))
        .expect(1)
        .mount(&glz)
        .await;
    on("POST", TOKEN)
        .and(body_string(
            "client_id=client-1&client_secret=s3cret&grant_type=password&credtype=authtoken&username=user-16&password=req-tok",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(user_token_body(&home.uri())))
        .expect(1)
        .mount(&home)
        .await;
    let tokens = authtoken_client(&glz, &glz)
        .exchange_request_token("user-16", &SecretString::from("req-tok"), soon())
        .await
        .unwrap();
    assert_eq!(tokens.access_token.expose_secret(), "user-access");
    assert_eq!(tokens.geolocation.as_str(), home.uri());
    assert_eq!(requests_to(&glz, TOKEN).await.len(), 1);
    assert_eq!(requests_to(&home, TOKEN).await.len(), 1);
}

#[tokio::test]
async fn a_second_code_16_is_not_followed() {
    let glz = MockServer::start().await;
    let second = MockServer::start().await;
    let third = MockServer::start().await;
    on("POST", TOKEN)
        .respond_with(lives_elsewhere(&second.uri()))
        .mount(&glz)
        .await;
    on("POST", TOKEN)
        .respond_with(lives_elsewhere(&third.uri()))
        .mount(&second)
        .await;
    let err = client(&glz)
        .exchange_request_token("user-16", &SecretString::from("req-tok"), soon())
        .await
        .unwrap_err();
    match &err {
        ConcurError::OAuth { error, .. } => {
            assert_eq!(error.kind(), OAuthErrorKind::UserLivesElsewhere)
        }
        other => panic!("expected the second code 16, got {other:?}"),
    }
    assert_eq!(requests_to(&glz, TOKEN).await.len(), 1);
    assert_eq!(requests_to(&second, TOKEN).await.len(), 1);
    assert!(third.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_code_16_geolocation_outside_concur_or_missing_is_not_called() {
    for (geolocation, want) in [
        (json!("https://evil.example.com"), "base_url"),
        (json!(null), "oauth"),
    ] {
        let err = exchange_error(|_| {
            ResponseTemplate::new(400).set_body_json(json!({
                "code": 16, "error": "invalid_request", "error_description": "user lives elsewhere",
                "geolocation": geolocation
            }))
        })
        .await;
        assert_eq!(err.kind(), want, "{err}");
    }
}

// ----- the app token's geolocation ---------------------------------------------------

#[tokio::test]
async fn calls_with_the_app_token_go_to_its_geolocation() {
    let configured = MockServer::start().await;
    let geo = MockServer::start().await;
    on("POST", TOKEN)
        .and(body_string_contains("grant_type=client_credentials"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "expires_in": "3600", "token_type": "Bearer", "access_token": "app-geo",
            "geolocation": geo.uri()
        })))
        .expect(1)
        .mount(&configured)
        .await;
    on("GET", LIST)
        .and(header("authorization", "Bearer app-geo"))
        .and(wiremock::matchers::query_param_is_missing("offset"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            &["a"],
            Some(format!("{}{LIST}?limit=1&offset=1", geo.uri())),
        )))
        .expect(1)
        .mount(&geo)
        .await;
    on("GET", LIST)
        .and(query_param("offset", "1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(&["b"], None)))
        .expect(1)
        .mount(&geo)
        .await;
    on("GET", format!("{LIST}b"))
        .respond_with(ResponseTemplate::new(200).set_body_json(item("b")))
        .expect(1)
        .mount(&geo)
        .await;
    on("PUT", format!("{LIST}b"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&geo)
        .await;
    let client = client(&configured);
    assert_eq!(client.app_base(soon()).await.unwrap().as_str(), geo.uri());
    let mut pager = client.pages(1);
    let first = pager.next_page(soon()).await.unwrap().unwrap();
    assert_eq!(first.next_offset.as_deref(), Some("1"));
    let second = pager.next_page(soon()).await.unwrap().unwrap();
    assert_eq!(second.items[0].id, "b");
    assert_eq!(client.get("b", soon()).await.unwrap().id, "b");
    client
        .update_status("b", ConnectionStatus::Connected, soon())
        .await
        .unwrap();
    let at_configured: Vec<String> = configured
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    assert_eq!(
        at_configured,
        [TOKEN],
        "only the token grant at the configured base"
    );
}

#[tokio::test]
async fn an_app_token_geolocation_outside_concur_is_refused() {
    let server = MockServer::start().await;
    on("POST", TOKEN)
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "expires_in": "3600", "access_token": "a", "geolocation": "https://evil.example.com"
        })))
        .mount(&server)
        .await;
    let err = client(&server)
        .list_page(10, None, soon())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "base_url", "{err}");
    assert!(requests_to(&server, LIST).await.is_empty());
}

// ----- the auth page's own examples --------------------------------------------------

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[tokio::test]
async fn the_auth_pages_token_examples_are_read() {
    // The examples' geolocation is us.api.concursolutions.com: a Concur domain, accepted.
    let server = MockServer::start().await;
    on("POST", TOKEN)
        .and(body_string_contains("grant_type=client_credentials"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(fixture("oauth_token_client_credentials.json")),
        )
        .mount(&server)
        .await;
    for (grant, file) in [
        ("grant_type=password", "oauth_token_password.json"),
        ("grant_type=refresh_token", "oauth_token_refresh.json"),
    ] {
        on("POST", TOKEN)
            .and(body_string_contains(grant))
            .respond_with(ResponseTemplate::new(200).set_body_string(fixture(file)))
            .mount(&server)
            .await;
    }
    let client = client(&server);
    let app = client.app_token(soon()).await.unwrap();
    assert_eq!(app.expose_secret(), "access_token");
    // The app token's calls would go to its geolocation (none is made here).
    assert_eq!(
        client.app_base(soon()).await.unwrap().as_str(),
        "https://us.api.concursolutions.com"
    );

    let user = client
        .exchange_request_token("user-1", &SecretString::from("rt"), soon())
        .await
        .unwrap();
    assert_eq!(user.access_token.expose_secret(), "access_token");
    assert_eq!(user.refresh_token.expose_secret(), "refresh_token");
    assert_eq!(
        user.geolocation.as_str(),
        "https://us.api.concursolutions.com"
    );
    assert_eq!(user.expires_in, Duration::from_secs(3600));
    assert_eq!(user.scope.as_deref(), Some("app-scopes"));
    // "oidc_token" is not a JWT: the user id is the one the grant was made for.
    assert_eq!(user.user_id.as_deref(), Some("user-1"));

    let refreshed = client
        .refresh_user_token(
            &BaseUrl::parse(&server.uri()).unwrap(),
            &SecretString::from("refresh_token"),
            soon(),
        )
        .await
        .unwrap();
    assert_eq!(refreshed.refresh_token.expose_secret(), "refresh_token");
    assert_eq!(
        refreshed.geolocation.as_str(),
        "https://us.api.concursolutions.com",
        "the answer's geolocation replaces the one called"
    );
}

#[tokio::test]
async fn the_auth_pages_bad_login_example_is_a_typed_error() {
    let server = MockServer::start().await;
    on("POST", TOKEN)
        .respond_with(
            ResponseTemplate::new(401).set_body_string(fixture("oauth_error_bad_login.json")),
        )
        .mount(&server)
        .await;
    let err = client(&server)
        .exchange_request_token("u", &SecretString::from("rt"), soon())
        .await
        .unwrap_err();
    match err {
        ConcurError::OAuth { error, .. } => {
            assert_eq!(error.code, Some(5));
            assert_eq!(error.error.as_deref(), Some("invalid_grant"));
            assert_eq!(error.kind(), OAuthErrorKind::InvalidCredentials);
            assert_eq!(
                error.error_description.as_deref(),
                Some("Incorrect Credentials. Please Retry")
            );
        }
        other => panic!("expected OAuth error, got {other:?}"),
    }
}

#[test]
fn the_auth_pages_id_token_claims_give_the_user_id() {
    use base64::Engine;
    let claims = fixture("oauth_id_token_claims.json");
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.trim());
    let token = format!("eyJhbGciOiJSUzI1NiJ9.{payload}.signature");
    assert_eq!(
        triplink_shared::concur::auth::id_token_subject(&token).as_deref(),
        Some("76459ad3-f77b-4d98-a21a-55333c9179f0")
    );
}

#[tokio::test]
async fn absurd_token_lifetimes_are_clamped_and_oversized_answers_refused() {
    let server = MockServer::start().await;
    // A huge app token lifetime: no overflow of the cache's refresh instant.
    on("POST", TOKEN)
        .and(body_string_contains("grant_type=client_credentials"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "expires_in": "99999999999999999999999", "access_token": "app"
        })))
        .mount(&server)
        .await;
    for (refresh, expires_in, refresh_expires_in) in [
        ("zero", json!(0), json!(0)),
        ("negative", json!(-3600), json!(-1)),
        ("huge", json!(u64::MAX), json!("99999999999999999999")),
    ] {
        on("POST", TOKEN)
            .and(body_string_contains(format!("refresh_token={refresh}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "expires_in": expires_in, "access_token": "a", "refresh_token": "next",
                "refresh_expires_in": refresh_expires_in, "geolocation": server.uri()
            })))
            .mount(&server)
            .await;
    }
    on("POST", TOKEN)
        .and(body_string_contains("refresh_token=oversized"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "expires_in": 3600, "access_token": "a".repeat(128 * 1024),
            "refresh_token": "next", "geolocation": server.uri()
        })))
        .mount(&server)
        .await;
    on("POST", TOKEN)
        .and(body_string_contains("refresh_token=long-refresh"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "expires_in": 3600, "access_token": "a",
            "refresh_token": "r".repeat(9 * 1024), "geolocation": server.uri()
        })))
        .mount(&server)
        .await;
    let client = client(&server);
    client.app_token(soon()).await.unwrap();
    client.app_token(soon()).await.unwrap();
    let geolocation = BaseUrl::parse(&server.uri()).unwrap();
    let now = chrono::Utc::now();
    for refresh in ["zero", "negative", "huge"] {
        let tokens = client
            .refresh_user_token(&geolocation, &SecretString::from(refresh), soon())
            .await
            .unwrap();
        assert!(tokens.expires_in >= Duration::from_secs(1), "{refresh}");
        assert!(
            tokens.expires_in <= Duration::from_secs(24 * 3600),
            "{refresh}"
        );
        let left = (tokens.refresh_expires_at - now).num_seconds();
        assert!(
            (3500..=400 * 86_400 + 60).contains(&left),
            "{refresh}: {left}"
        );
    }
    for refresh in ["oversized", "long-refresh"] {
        let err = client
            .refresh_user_token(&geolocation, &SecretString::from(refresh), soon())
            .await
            .unwrap_err();
        assert!(
            matches!(err, ConcurError::Malformed { .. }),
            "{refresh}: {err:?}"
        );
        assert!(!err.to_string().contains("aaaa") && !err.to_string().contains("rrrr"));
    }
}

// ----- what errors may show ---------------------------------------------------------------

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}

fn assert_hides(err: &ConcurError, secrets: &[&str]) {
    let shown = format!("{err} / {err:?}");
    for secret in secrets {
        assert!(!shown.contains(secret), "{secret} leaked in {shown}");
    }
}

/// Input that reaches an error (a token answer serde refuses, a server's message, an OAuth
/// description, the URL of a failed call) is never quoted whole by the error's Display
/// or Debug.
#[tokio::test]
async fn errors_do_not_quote_tokens_logins_or_personal_data() {
    // A token answer whose access_token is a number: serde quotes it.
    let server = MockServer::start().await;
    on("POST", TOKEN)
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(r#"{"access_token": 5314636889, "expires_in": 3600}"#),
        )
        .mount(&server)
        .await;
    let err = client(&server).app_token(soon()).await.unwrap_err();
    assert!(matches!(err, ConcurError::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains("token response"), "{err}");
    assert_hides(&err, &["5314636889"]);

    // A 400 whose message names a user, and an OAuth refusal describing one.
    let (err, _) = error_for(ResponseTemplate::new(400).set_body_json(
        json!({"Error": {"Message": "user maria.smith@example.com has loyalty 5314636889"}}),
    ))
    .await;
    assert!(matches!(err, ConcurError::BadRequest { .. }), "{err:?}");
    assert_hides(&err, &["maria.smith", "example.com", "5314636889"]);
    let server = MockServer::start().await;
    on("POST", TOKEN)
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "code": 5, "error": "invalid_grant",
            "error_description": "no user maria.smith@example.com"
        })))
        .mount(&server)
        .await;
    let err = client(&server)
        .exchange_request_token("user-1", &SecretString::from("rt-secret-1"), soon())
        .await
        .unwrap_err();
    assert!(matches!(err, ConcurError::OAuth { .. }), "{err:?}");
    assert_hides(&err, &["maria.smith", "rt-secret-1", "s3cret"]);

    // A call whose URL names the user's login fails to connect: the URL is not shown.
    let server = MockServer::start().await;
    let geolocation = format!("http://127.0.0.1:{}", closed_port());
    on("POST", TOKEN)
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "app-1", "expires_in": "3600", "geolocation": geolocation
        })))
        .mount(&server)
        .await;
    let mut config = config(&server);
    config.retry = RetryPolicy::none();
    let err = ConcurClient::new(config)
        .unwrap()
        .create_for_user("maria.smith@example.com", soon())
        .await
        .unwrap_err();
    assert!(matches!(err, ConcurError::Connection { .. }), "{err:?}");
    assert_hides(&err, &["maria.smith", "app-1"]);
}

/// Bodies past the caps are refused as malformed, not read whole: a token answer above
/// `MAX_TOKEN_BODY`, a page above `MAX_API_BODY`.
#[tokio::test]
async fn answers_larger_than_the_caps_are_malformed() {
    use triplink_shared::concur::{MAX_API_BODY, MAX_TOKEN_BODY};
    let server = MockServer::start().await;
    let padding = "x".repeat(MAX_TOKEN_BODY);
    on("POST", TOKEN)
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "app-1", "expires_in": "3600", "padding": padding
        })))
        .mount(&server)
        .await;
    let err = client(&server).app_token(soon()).await.unwrap_err();
    assert!(
        err.to_string().contains("larger than"),
        "{err}: a token answer above the cap"
    );

    let server = MockServer::start().await;
    app_token(&server, "t").await;
    let mut body = page(&["a"], None);
    body["padding"] = json!("x".repeat(MAX_API_BODY));
    on("GET", LIST)
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&server)
        .await;
    let err = client(&server)
        .list_page(10, None, soon())
        .await
        .unwrap_err();
    assert!(matches!(err, ConcurError::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains("larger than"), "{err}");

    // Just under the cap is read.
    let server = MockServer::start().await;
    app_token(&server, "t").await;
    let mut body = page(&["a"], None);
    body["padding"] = json!("x".repeat(MAX_API_BODY - 1024));
    on("GET", LIST)
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&server)
        .await;
    let page = client(&server).list_page(10, None, soon()).await.unwrap();
    assert_eq!(page.items.len(), 1);
}
