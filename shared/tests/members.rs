//! The member directories: DynamoDB against a real local DynamoDB (moto_server), HTTP
//! against a mock member service; `match_request` end to end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use secrecy::SecretString;
use serde_json::json;
use triplink_shared::matching::{AttentionReason, MatchOutcome, MatchPolicy};
use triplink_shared::members::{
    match_request, DirectoryError, DynamoMemberDirectory, HttpDirectoryConfig, HttpMemberDirectory,
    Member, MemberDirectory, MemberStatus,
};
use triplink_shared::model::{ConnectionRequest, WireConnectionRequest};
use triplink_shared::store::layout::members as attr;
use triplink_shared::store::tables;
use triplink_shared::testing;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn directory() -> DynamoMemberDirectory {
    let client = testing::dynamodb();
    let table = testing::unique_name("members");
    tables::create_members_table(&client, &table).await.unwrap();
    DynamoMemberDirectory::new(client, table)
}

fn member(
    id: &str,
    loyalty: Option<&str>,
    last: &str,
    emails: &[&str],
    status: MemberStatus,
) -> Member {
    Member {
        member_id: id.into(),
        loyalty_number: loyalty.map(str::to_owned),
        first_name: Some("Robert".into()),
        last_name: last.into(),
        emails: emails.iter().map(|e| (*e).to_owned()).collect(),
        status,
    }
}

fn request(loyalty: Option<&str>, last: Option<&str>, emails: &[&str]) -> ConnectionRequest {
    let mut wire_emails: [Option<String>; 5] = Default::default();
    for (slot, email) in wire_emails.iter_mut().zip(emails) {
        *slot = Some((*email).to_owned());
    }
    ConnectionRequest::from_wire(WireConnectionRequest {
        id: Some("r1".into()),
        first_name: Some("Bob".into()),
        last_name: last.map(str::to_owned),
        loyalty_number: loyalty.map(str::to_owned),
        emails: wire_emails,
        ..Default::default()
    })
    .unwrap()
}

fn ids(members: &[Member]) -> Vec<&str> {
    let mut ids: Vec<&str> = members.iter().map(|m| m.member_id.as_str()).collect();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn dynamo_finds_members_by_loyalty_key() {
    let directory = directory().await;
    let müller = member(
        "M1",
        Some("0012-345 ab"),
        "Müller",
        &[],
        MemberStatus::Active,
    );
    directory.put_member(&müller).await.unwrap();
    directory
        .put_member(&member(
            "M2",
            Some("999"),
            "Other",
            &[],
            MemberStatus::Active,
        ))
        .await
        .unwrap();
    directory
        .put_member(&member(
            "M3",
            None,
            "NoNumber",
            &["x@example.com"],
            MemberStatus::Active,
        ))
        .await
        .unwrap();

    for query in ["0012345AB", " 0012-345-ab ", "0012 345 AB"] {
        let found = directory.by_loyalty_number(query).await.unwrap();
        assert_eq!(found, std::slice::from_ref(&müller), "query {query:?}");
    }
    // The number comes back as imported.
    assert_eq!(
        directory.by_loyalty_number("0012345ab").await.unwrap()[0]
            .loyalty_number
            .as_deref(),
        Some("0012-345 ab")
    );
    assert!(directory
        .by_loyalty_number("12345AB")
        .await
        .unwrap()
        .is_empty());
    assert!(directory.by_loyalty_number(" - ").await.unwrap().is_empty());
    assert_eq!(directory.count().await.unwrap(), 3);
}

#[tokio::test]
async fn dynamo_finds_members_by_any_of_their_emails_case_insensitively() {
    let directory = directory().await;
    let ana = member(
        "M1",
        None,
        "Núñez",
        &[
            "ANA@Mail.Example",
            "ana.second@mail.example",
            "Ana.Third@MAIL.example",
        ],
        MemberStatus::Active,
    );
    let shared = member(
        "M2",
        None,
        "Núñez",
        &["ana@mail.example"],
        MemberStatus::Locked,
    );
    directory.put_member(&ana).await.unwrap();
    directory.put_member(&shared).await.unwrap();

    assert_eq!(
        ids(&directory.by_email(" ana@MAIL.example").await.unwrap()),
        ["M1", "M2"]
    );
    assert_eq!(
        directory.by_email("ANA.SECOND@mail.example").await.unwrap(),
        std::slice::from_ref(&ana)
    );
    assert_eq!(
        directory.by_email("ana.third@mail.example").await.unwrap(),
        std::slice::from_ref(&ana)
    );
    assert!(directory
        .by_email("nobody@mail.example")
        .await
        .unwrap()
        .is_empty());
    assert!(directory.by_email("  ").await.unwrap().is_empty());
    // Pointer items are not members.
    assert_eq!(directory.count().await.unwrap(), 2);
}

/// All e-mail pointer items of the table, as (email key, owner).
async fn pointers(directory: &DynamoMemberDirectory) -> Vec<(String, String)> {
    let items = directory
        .client
        .scan()
        .table_name(&directory.table)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    let text = |item: &HashMap<String, AttributeValue>, name: &str| match item.get(name) {
        Some(AttributeValue::S(value)) => value.clone(),
        _ => String::new(),
    };
    let mut found: Vec<(String, String)> = items
        .iter()
        .filter(|item| item.contains_key(attr::OWNER_MEMBER_ID))
        .map(|item| {
            (
                text(item, attr::EMAIL_KEY),
                text(item, attr::OWNER_MEMBER_ID),
            )
        })
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn dynamo_re_put_replaces_stale_email_pointers() {
    let directory = directory().await;
    let mut m = member(
        "M1",
        Some("42"),
        "Smith",
        &["old@example.com", "Kept@example.com"],
        MemberStatus::Active,
    );
    directory.put_member(&m).await.unwrap();
    assert_eq!(
        pointers(&directory).await,
        [
            ("kept@example.com".to_owned(), "M1".to_owned()),
            ("old@example.com".to_owned(), "M1".to_owned())
        ]
    );

    m.emails = vec!["kept@example.com".into(), "new@example.com".into()];
    m.status = MemberStatus::Closed;
    m.loyalty_number = Some("43".into());
    directory.put_member(&m).await.unwrap();
    assert_eq!(
        pointers(&directory).await,
        [
            ("kept@example.com".to_owned(), "M1".to_owned()),
            ("new@example.com".to_owned(), "M1".to_owned())
        ]
    );
    assert!(directory
        .by_email("old@example.com")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        directory.by_email("new@example.com").await.unwrap(),
        [m.clone()]
    );
    assert_eq!(
        directory.by_email("kept@example.com").await.unwrap(),
        [m.clone()]
    );
    assert!(directory.by_loyalty_number("42").await.unwrap().is_empty());
    assert_eq!(
        directory.by_loyalty_number("43").await.unwrap(),
        [m.clone()]
    );
    assert_eq!(directory.count().await.unwrap(), 1);
}

#[tokio::test]
async fn dynamo_skips_dangling_pointers_and_refuses_pointer_like_ids() {
    let directory = directory().await;
    // A pointer whose owner does not exist, and one whose owner no longer has the address.
    for (key, owner) in [("gone@example.com", "M404"), ("moved@example.com", "M1")] {
        directory
            .client
            .put_item()
            .table_name(&directory.table)
            .item(
                attr::MEMBER_ID,
                AttributeValue::S(format!("email#{key}#{owner}")),
            )
            .item(attr::EMAIL_KEY, AttributeValue::S(key.into()))
            .item(attr::OWNER_MEMBER_ID, AttributeValue::S(owner.into()))
            .send()
            .await
            .unwrap();
    }
    directory
        .put_member(&member(
            "M1",
            None,
            "Smith",
            &["here@example.com"],
            MemberStatus::Active,
        ))
        .await
        .unwrap();
    assert!(directory
        .by_email("gone@example.com")
        .await
        .unwrap()
        .is_empty());
    assert!(directory
        .by_email("moved@example.com")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        ids(&directory.by_email("here@example.com").await.unwrap()),
        ["M1"]
    );

    let error = directory
        .put_member(&member("email#x", None, "Smith", &[], MemberStatus::Active))
        .await
        .unwrap_err();
    assert!(matches!(error, DirectoryError::Malformed(_)), "{error}");
}

#[tokio::test]
async fn dynamo_unreachable_is_unavailable() {
    let config = testing::local_sdk_config("http://127.0.0.1:9");
    let directory = DynamoMemberDirectory::new(aws_sdk_dynamodb::Client::new(&config), "members");
    let error = directory.by_loyalty_number("42").await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(matches!(error, DirectoryError::Unavailable(_)));
}

#[tokio::test]
async fn match_request_end_to_end_for_each_outcome() {
    let directory = Arc::new(directory().await);
    for m in [
        member("M1", Some("1001"), "Müller", &[], MemberStatus::Active),
        member("M2", Some("1002"), "Schmitt", &[], MemberStatus::Active),
        member("M3", Some("1003"), "Closed", &[], MemberStatus::Closed),
        member("M4", Some("1004"), "Locked", &[], MemberStatus::Locked),
        member(
            "M5",
            Some("1005"),
            "Unverified",
            &[],
            MemberStatus::Unverified,
        ),
        member("M6", Some("1006"), "Twin", &[], MemberStatus::Active),
        member("M7", Some("10-06"), "TWIN", &[], MemberStatus::Active),
        member(
            "M8",
            None,
            "O'Brien",
            &[
                "unrelated@else.example",
                "X@MAIL.EXAMPLE",
                "THIRD@MAIL.EXAMPLE",
            ],
            MemberStatus::Active,
        ),
    ] {
        directory.put_member(&m).await.unwrap();
    }
    let policy = MatchPolicy::default();
    let attention = |id: Option<&str>, reason| MatchOutcome::NeedsAttention {
        member_id: id.map(str::to_owned),
        reason,
    };
    let cases = [
        (
            request(Some("10-01"), Some("Muller"), &[]),
            MatchOutcome::Matched {
                member_id: "M1".into(),
            },
        ),
        (
            request(Some("9999"), Some("Muller"), &[]),
            MatchOutcome::NotFound,
        ),
        (
            request(Some("1002"), Some("Schmidt"), &[]),
            MatchOutcome::NameMismatch,
        ),
        (request(Some("1002"), None, &[]), MatchOutcome::NameMismatch),
        (
            request(Some("1003"), Some("closed"), &[]),
            attention(Some("M3"), AttentionReason::Closed),
        ),
        (
            request(Some("1004"), Some("Locked"), &[]),
            attention(Some("M4"), AttentionReason::Locked),
        ),
        (
            request(Some("1005"), Some("Unverified"), &[]),
            attention(Some("M5"), AttentionReason::Unverified),
        ),
        (
            request(Some("1006"), Some("Twin"), &[]),
            MatchOutcome::DuplicateLoyaltyNumber { members: 2 },
        ),
        (
            request(
                None,
                Some("OBrien"),
                &["a@mail.example", "b@mail.example", "third@mail.example"],
            ),
            MatchOutcome::Matched {
                member_id: "M8".into(),
            },
        ),
        (
            request(None, Some("Brien"), &["x@mail.example"]),
            MatchOutcome::NameMismatch,
        ),
        (
            request(None, Some("OBrien"), &["zz@mail.example"]),
            MatchOutcome::NotFound,
        ),
        (request(None, Some("OBrien"), &[]), MatchOutcome::NotFound),
    ];
    for (request, expected) in cases {
        assert_eq!(
            match_request(&directory, &request, &policy).await.unwrap(),
            expected,
            "{request:?}"
        );
    }
}

#[tokio::test]
async fn the_dynamodb_manifest_is_what_makes_the_directory_ready() {
    use triplink_shared::members::health::readiness;
    use triplink_shared::members::{NotReady, Readiness};
    let directory = directory().await;
    // Day one: an empty table has no manifest.
    assert_eq!(
        readiness(&directory.health().await),
        Readiness::NotReady(NotReady::NoManifest)
    );
    // Members written without an import's manifest still do not make it ready.
    for id in ["M1", "M2"] {
        directory
            .put_member(&member(
                id,
                Some(id),
                "Smith",
                &["s@example.com"],
                MemberStatus::Active,
            ))
            .await
            .unwrap();
    }
    assert!(!readiness(&directory.health().await).is_ready());
    // The import's manifest counts member items only (not pointers, not itself).
    let now = chrono::Utc::now();
    assert_eq!(directory.refresh_manifest(now).await.unwrap(), 2);
    assert_eq!(
        readiness(&directory.health().await),
        Readiness::Ready { members: 2 }
    );
    assert_eq!(directory.count().await.unwrap(), 2);
    let health = directory.health().await.unwrap();
    assert!(health
        .updated_at
        .is_some_and(|at| at.starts_with(&now.format("%Y-%m-%d").to_string())));
    // A manifest of zero members (an empty import) is not ready.
    directory.write_manifest(0, now).await.unwrap();
    assert_eq!(
        readiness(&directory.health().await),
        Readiness::NotReady(NotReady::Empty)
    );
    // The reserved id cannot be overwritten by a member, and lookups never see it.
    let error = directory
        .put_member(&member(
            "manifest#directory",
            Some("X1"),
            "Smith",
            &[],
            MemberStatus::Active,
        ))
        .await
        .unwrap_err();
    assert!(matches!(error, DirectoryError::Malformed(_)), "{error}");
    assert!(directory
        .by_loyalty_number("manifest#directory")
        .await
        .unwrap()
        .is_empty());
    // A wrong table name is an outage, not an empty directory.
    let wrong = DynamoMemberDirectory::new(directory.client.clone(), "no-such-table");
    let error = wrong.health().await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(!readiness(&Err(error)).is_ready());
}

// ---- HTTP directory ----

fn http_config(server: &MockServer, timeout: Duration) -> HttpDirectoryConfig {
    HttpDirectoryConfig {
        base_url: format!("{}/api/v1/", server.uri()).parse().unwrap(),
        timeout,
        auth_header: Some(("x-api-key".into(), SecretString::from("s3cret"))),
    }
}

fn member_json() -> serde_json::Value {
    json!({"memberId": "M1", "loyaltyNumber": "0012345AB", "firstName": null, "lastName": "Müller",
           "emails": ["a@example.com"], "status": "active", "tier": "gold"})
}

#[tokio::test]
async fn http_queries_by_loyalty_key_and_email_key_with_the_auth_header() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/members"))
        .and(query_param("loyaltyNumber", "0012345AB"))
        .and(header("accept", "application/json"))
        .and(header("x-api-key", "s3cret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"members": [member_json()]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/members"))
        .and(query_param("email", "a+b@example.com"))
        .and(header("accept", "application/json"))
        .and(header("x-api-key", "s3cret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"members": []})))
        .expect(1)
        .mount(&server)
        .await;
    let directory = HttpMemberDirectory::new(http_config(&server, Duration::from_secs(5))).unwrap();
    assert_eq!(directory.members_url().path(), "/api/v1/members");

    let found = directory.by_loyalty_number(" 0012-345 ab ").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].member_id, "M1");
    assert_eq!(found[0].last_name, "Müller");
    assert_eq!(found[0].status, MemberStatus::Active);
    assert!(directory
        .by_email(" A+B@Example.COM ")
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn http_only_an_explicit_404_is_empty_and_errors_are_classified() {
    let server = MockServer::start().await;
    let answer = |param: &'static str, value: &'static str, response: ResponseTemplate| {
        Mock::given(method("GET"))
            .and(path("/api/v1/members"))
            .and(query_param(param, value))
            .respond_with(response)
    };
    answer(
        "loyaltyNumber",
        "L404",
        ResponseTemplate::new(404).set_body_json(json!({"error": "member_not_found"})),
    )
    .mount(&server)
    .await;
    // A 404 that does not say "member not found": a wrong path, a gateway's page.
    answer("loyaltyNumber", "BARE404", ResponseTemplate::new(404))
        .mount(&server)
        .await;
    answer(
        "loyaltyNumber",
        "HTML404",
        ResponseTemplate::new(404).set_body_string("<html>Not Found</html>"),
    )
    .mount(&server)
    .await;
    answer(
        "loyaltyNumber",
        "OTHER404",
        ResponseTemplate::new(404).set_body_json(json!({"error": "route_not_found"})),
    )
    .mount(&server)
    .await;
    answer("loyaltyNumber", "L503", ResponseTemplate::new(503))
        .mount(&server)
        .await;
    answer("loyaltyNumber", "L429", ResponseTemplate::new(429))
        .mount(&server)
        .await;
    answer("loyaltyNumber", "L403", ResponseTemplate::new(403))
        .mount(&server)
        .await;
    answer(
        "loyaltyNumber",
        "SLOW",
        ResponseTemplate::new(200)
            .set_body_json(json!({"members": []}))
            .set_delay(Duration::from_secs(3)),
    )
    .mount(&server)
    .await;
    answer(
        "email",
        "bad@example.com",
        ResponseTemplate::new(200).set_body_string("<html>not json</html>"),
    )
    .mount(&server)
    .await;
    answer(
        "email",
        "shape@example.com",
        ResponseTemplate::new(200).set_body_json(json!({"members": [{"memberId": "M1",
            "lastName": "Müller", "emails": "secret.address@example.com", "status": "active"}]})),
    )
    .mount(&server)
    .await;
    let directory =
        HttpMemberDirectory::new(http_config(&server, Duration::from_millis(500))).unwrap();

    assert!(directory
        .by_loyalty_number("L404")
        .await
        .unwrap()
        .is_empty());
    for (number, transient) in [
        ("BARE404", true),
        ("HTML404", true),
        ("OTHER404", true),
        ("L503", true),
        ("L429", true),
        ("SLOW", true),
        ("L403", false),
    ] {
        let error = directory.by_loyalty_number(number).await.unwrap_err();
        assert_eq!(error.is_transient(), transient, "{number}: {error}");
        assert!(
            !error.to_string().contains(number),
            "the URL leaks: {error}"
        );
    }
    for email in ["bad@example.com", "shape@example.com"] {
        let error = directory.by_email(email).await.unwrap_err();
        assert!(matches!(error, DirectoryError::Malformed(_)), "{error}");
        let shown = error.to_string();
        assert!(
            !shown.contains("secret.address") && !shown.contains(email),
            "{shown}"
        );
    }
}

#[tokio::test]
async fn http_health_counts_members_only_when_the_service_says_ok() {
    use triplink_shared::members::health::readiness;
    use triplink_shared::members::{NotReady, Readiness};
    let cases: Vec<(ResponseTemplate, Result<Readiness, bool>)> = vec![
        (
            ResponseTemplate::new(200).set_body_json(json!({"status": "ok", "members": 1200})),
            Ok(Readiness::Ready { members: 1200 }),
        ),
        (
            ResponseTemplate::new(200).set_body_json(json!({"status": "ok", "members": 0})),
            Ok(Readiness::NotReady(NotReady::Empty)),
        ),
        (
            ResponseTemplate::new(404),
            Ok(Readiness::NotReady(NotReady::NoManifest)),
        ),
        // Outages and nonsense: not ready, and the error says why.
        (
            ResponseTemplate::new(200).set_body_json(json!({"status": "degraded", "members": 5})),
            Err(true),
        ),
        (ResponseTemplate::new(503), Err(true)),
        (
            ResponseTemplate::new(200).set_body_string("<html/>"),
            Err(false),
        ),
    ];
    for (response, expected) in cases {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/api/v1/health"))
            .and(header("x-api-key", "s3cret"))
            .respond_with(response)
            .expect(1)
            .mount(&server)
            .await;
        let directory =
            HttpMemberDirectory::new(http_config(&server, Duration::from_secs(2))).unwrap();
        let health = directory.health().await;
        match expected {
            Ok(readiness_expected) => {
                assert_eq!(readiness(&health), readiness_expected, "{health:?}")
            }
            Err(transient) => {
                let error = health.unwrap_err();
                assert_eq!(error.is_transient(), transient, "{error}");
                assert!(!readiness(&Err(error)).is_ready());
            }
        }
    }
}

#[tokio::test]
async fn http_connection_refused_is_unavailable() {
    let directory = HttpMemberDirectory::new(HttpDirectoryConfig {
        base_url: "http://127.0.0.1:9".parse().unwrap(),
        timeout: Duration::from_secs(2),
        auth_header: None,
    })
    .unwrap();
    let error = directory.by_email("a@example.com").await.unwrap_err();
    assert!(matches!(error, DirectoryError::Unavailable(_)), "{error}");
}

#[test]
fn http_requires_https_except_for_loopback() {
    let config = |url: &str| HttpDirectoryConfig {
        base_url: url.parse().unwrap(),
        timeout: Duration::from_secs(1),
        auth_header: None,
    };
    for ok in [
        "https://members.example.com",
        "https://members.example.com/api/v1",
        "http://127.0.0.1:8080",
        "http://localhost:8080/x/",
        "http://[::1]:8080",
    ] {
        assert!(HttpMemberDirectory::new(config(ok)).is_ok(), "{ok}");
    }
    for refused in [
        "http://members.example.com",
        "http://10.0.0.1",
        "ftp://127.0.0.1",
        "https://members.example.com/?key=1",
        "https://user:pw@members.example.com",
    ] {
        let error = HttpMemberDirectory::new(config(refused)).unwrap_err();
        assert!(!error.is_transient(), "{refused}: {error}");
    }
    let bad_header = HttpDirectoryConfig {
        auth_header: Some(("bad header".into(), SecretString::from("v"))),
        ..config("https://members.example.com")
    };
    assert!(HttpMemberDirectory::new(bad_header).is_err());
    // The secret never shows in Debug output.
    let with_secret = HttpDirectoryConfig {
        auth_header: Some(("Authorization".into(), SecretString::from("Bearer xyz"))),
        ..config("https://members.example.com")
    };
    assert!(!format!("{with_secret:?}").contains("xyz"));
    let directory = HttpMemberDirectory::new(with_secret).unwrap();
    assert!(!format!("{directory:?}").contains("xyz"));
}

/// A lookup or health answer above `MAX_BODY` is refused as malformed, not read whole;
/// one just under it is read.
#[tokio::test]
async fn http_bodies_larger_than_the_cap_are_malformed() {
    use triplink_shared::members::http::MAX_BODY;
    let server = MockServer::start().await;
    let big = json!({"members": [member_json()], "padding": "x".repeat(MAX_BODY)});
    let under = json!({"members": [member_json()], "padding": "x".repeat(MAX_BODY - 1024)});
    for (loyalty, body) in [("1", &big), ("2", &under)] {
        Mock::given(method("GET"))
            .and(path("/api/v1/members"))
            .and(query_param("loyaltyNumber", loyalty))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/api/v1/health"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"status": "ok", "members": 1, "padding": "x".repeat(MAX_BODY)}),
            ),
        )
        .mount(&server)
        .await;
    let directory = HttpMemberDirectory::new(http_config(&server, Duration::from_secs(5))).unwrap();
    let err = directory.by_loyalty_number("1").await.unwrap_err();
    assert!(matches!(err, DirectoryError::Malformed(_)), "{err:?}");
    assert!(err.to_string().contains("larger than"), "{err}");
    assert_eq!(directory.by_loyalty_number("2").await.unwrap().len(), 1);
    let err = directory.health().await.unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
}
