//! `triplink tokens` and `triplink connections revoke` against moto (DynamoDB, KMS) and
//! the Concur sandbox.

use std::time::Duration;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use concur_sandbox::{spawn, Config};
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;
use triplink_cli::output::{format_report, OutputFormat};
use triplink_cli::tokens::{revoke, tokens_paged};
use triplink_shared::concur::{BaseUrl, ConcurClient, ConcurConfig, ConcurError};
use triplink_shared::store::layout::timestamp;
use triplink_shared::store::tables;
use triplink_shared::testing;
use triplink_shared::vault::{attr, KmsEncryptor, Revoked, TokenVault};

fn far() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

async fn connections_table() -> String {
    let name = testing::unique_name("cli-connections");
    tables::create_connections_table(&testing::dynamodb(), &name)
        .await
        .unwrap();
    name
}

#[tokio::test]
async fn tokens_counts_states_and_ages_without_any_value() {
    let table = connections_table().await;
    let now = Utc::now();
    let days = |d: i64| timestamp(now - chrono::Duration::days(d));
    let ahead = |d: i64| timestamp(now + chrono::Duration::days(d));
    // (member, token_state, refreshed_at, refresh_expires_at)
    type Row<'a> = (&'a str, Option<&'a str>, Option<String>, Option<String>);
    let rows: [Row; 7] = [
        ("m-1", None, Some(days(1)), Some(ahead(180))),
        ("m-2", Some("active"), Some(days(20)), Some(ahead(160))),
        ("m-3", Some("active"), Some(days(100)), Some(ahead(20))),
        ("m-4", Some("active"), Some(days(200)), Some(days(10))),
        ("m-5", Some("expired"), Some(days(190)), Some(days(5))),
        ("m-6", None, None, None),
        ("replaced#m-1#1", Some("replaced"), Some(days(1)), None),
    ];
    let dynamo = testing::dynamodb();
    for (member, state, refreshed, expires) in rows {
        let mut put = dynamo
            .put_item()
            .table_name(&table)
            .item(attr::MEMBER_ID, AttributeValue::S(member.into()))
            .item(
                attr::GEOLOCATION,
                AttributeValue::S("https://us2.api.concursolutions.com".into()),
            )
            .item(
                attr::REFRESH_TOKEN_CIPHERTEXT,
                AttributeValue::B(Blob::new(b"CIPHER-SECRET".to_vec())),
            );
        if let Some(state) = state {
            put = put.item(attr::TOKEN_STATE, AttributeValue::S(state.into()));
        }
        if let Some(at) = refreshed {
            put = put.item(attr::REFRESHED_AT, AttributeValue::S(at));
        }
        if let Some(at) = expires {
            put = put.item(attr::REFRESH_EXPIRES_AT, AttributeValue::S(at));
        }
        put.send().await.unwrap();
    }
    let report = tokens_paged(&dynamo, &table, now, Some(2)).await.unwrap();
    assert_eq!((report.total, report.active, report.expired), (6, 5, 1));
    assert_eq!(report.awaiting_revoke, 1);
    assert_eq!(report.expiring_within_30_days, 1);
    assert_eq!(report.past_expiry, 1);
    let a = &report.by_age;
    assert_eq!(
        (
            a.under_7_days,
            a.from_7_to_30_days,
            a.from_30_to_90_days,
            a.from_90_to_150_days,
            a.over_150_days,
            a.unknown
        ),
        (1, 1, 0, 1, 1, 1)
    );
    for format in [OutputFormat::Table, OutputFormat::Json] {
        let text = format_report(&report, format);
        assert!(!text.contains("m-1") && !text.contains("CIPHER"), "{text}");
    }
}

#[tokio::test]
async fn connections_revoke_revokes_at_concur_then_deletes_and_an_expired_one_is_only_deleted() {
    let mut config = Config::for_tests();
    config.users = 2;
    config.clock_start = None;
    let sandbox = spawn(config).await.unwrap();
    let concur = ConcurClient::new(ConcurConfig::new(
        BaseUrl::parse(&sandbox.local_url).unwrap(),
        "sandbox-client",
        SecretString::from("sandbox-secret"),
    ))
    .unwrap();
    let table = connections_table().await;
    let vault = TokenVault::new(
        testing::dynamodb(),
        table,
        KmsEncryptor::from_sdk_config(&testing::sdk_config(), testing::kms_key().await),
    );
    let page = concur.list_page(10, None, far()).await.unwrap();
    let mut connected = Vec::new();
    for (member, request) in ["A", "B"].iter().zip(&page.items) {
        let tokens = testing::exchange(&concur, request).await;
        vault
            .store_connection(member, &request.id, &tokens, Utc::now())
            .await
            .unwrap();
        connected.push(tokens);
    }
    // A: revoked at Concur (the user's refresh tokens stop working), then deleted.
    let report = revoke(&vault, &concur, "A", far()).await.unwrap();
    assert_eq!(report.revoked, Revoked::AtConcurAndHere);
    assert!(vault.get("A").await.unwrap().is_none());
    // The token stored before the revoke's own refresh is dead; so is every other.
    let refused = concur
        .refresh_user_token(
            &connected[0].geolocation,
            &connected[0].refresh_token,
            far(),
        )
        .await;
    assert!(
        matches!(refused, Err(ConcurError::OAuth { .. })),
        "{refused:?}"
    );

    // B: the user disconnected at Concur meanwhile: nothing to revoke there, deleted here.
    concur
        .revoke_connection(&connected[1].geolocation, &connected[1].access_token, far())
        .await
        .unwrap();
    let report = revoke(&vault, &concur, "B", far()).await.unwrap();
    assert_eq!(report.revoked, Revoked::HereOnly);
    assert!(vault.get("B").await.unwrap().is_none());
    let text = format_report(&report, OutputFormat::Json);
    assert!(!text.contains(connected[1].refresh_token.expose_secret()));

    // Unknown member: a clear error.
    let err = revoke(&vault, &concur, "nobody", far()).await.unwrap_err();
    assert!(err.to_string().contains("no Concur connection"), "{err}");
}
