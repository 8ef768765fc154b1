//! `members import` of JSON arrays, JSON Lines and CSV into a members table on moto.

use std::path::PathBuf;

use triplink_cli::members::{import_file, Format, ImportOptions, ImportReport};
use triplink_cli::output::{format_report, OutputFormat};
use triplink_shared::members::{DynamoMemberDirectory, MemberDirectory};
use triplink_shared::store::tables;
use triplink_shared::testing;

async fn directory() -> DynamoMemberDirectory {
    let name = testing::unique_name("cli-members");
    tables::create_members_table(&testing::dynamodb(), &name)
        .await
        .unwrap();
    DynamoMemberDirectory::new(testing::dynamodb(), name)
}

/// A file holding `text`, in a directory removed when the guard is dropped.
fn file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn options(dry_run: bool) -> ImportOptions {
    ImportOptions {
        dry_run,
        format: Format::Auto,
        concurrency: 16,
        progress: false,
    }
}

async fn import(directory: &DynamoMemberDirectory, name: &str, text: &str) -> ImportReport {
    let (_dir, path) = file(name, text);
    import_file(directory, &path, &options(false))
        .await
        .unwrap()
}

#[tokio::test]
async fn the_sandbox_members_file_imports_as_a_json_array() {
    let members = concur_sandbox::seed::generate(7, 60).members;
    let text = serde_json::to_string_pretty(&members).unwrap();
    let directory = directory().await;
    let report = import(&directory, "members.json", &text).await;
    assert_eq!(report.format, Format::Json);
    assert!(report.invalid.is_empty(), "{:?}", report.invalid);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.imported, members.len());
    assert_eq!(directory.count().await.unwrap(), members.len() as u64);
    // The import writes the manifest the worker's health gate reads.
    assert_eq!(report.manifest_members, Some(members.len() as u64));
    assert_eq!(
        directory.health().await.unwrap().members,
        Some(members.len() as u64)
    );

    let with_number = members.iter().find(|m| m.loyalty_number.is_some()).unwrap();
    let found = directory
        .by_loyalty_number(with_number.loyalty_number.as_deref().unwrap())
        .await
        .unwrap();
    assert!(found.iter().any(|m| m.member_id == with_number.member_id));

    // Importing again replaces, never duplicates.
    let again = import(&directory, "members.json", &text).await;
    assert_eq!(again.imported, members.len());
    assert_eq!(directory.count().await.unwrap(), members.len() as u64);
}

#[tokio::test]
async fn json_lines_and_csv_import() {
    let directory = directory().await;
    let jsonl = r#"{"memberId":"L1","loyaltyNumber":"1234567","firstName":"Ann","lastName":"Lee","emails":["ann@x.example"],"status":"active","tier":"gold"}

{"memberId":"L2","loyaltyNumber":null,"lastName":"Park","emails":[],"status":"LOCKED"}
"#;
    let report = import(&directory, "members.jsonl", jsonl).await;
    assert_eq!(
        (report.format, report.records, report.imported),
        (Format::Jsonl, 2, 2)
    );

    let csv = "memberId,loyaltyNumber,firstName,lastName,emails,status\n\
               C1,5550001,Cleo,Ng,cleo@a.example; cleo.ng@b.example,active\n\
               C2,,\"O'Hara, Jr\",O'Hara,,unverified\n";
    let report = import(&directory, "members.csv", csv).await;
    assert_eq!(
        (report.format, report.records, report.imported),
        (Format::Csv, 2, 2)
    );
    assert_eq!(directory.count().await.unwrap(), 4);

    let by_second_email = directory.by_email("CLEO.NG@b.example").await.unwrap();
    assert_eq!(by_second_email.len(), 1);
    assert_eq!(by_second_email[0].member_id, "C1");
    assert_eq!(by_second_email[0].emails.len(), 2);
    let locked = directory.by_loyalty_number("1234567").await.unwrap();
    assert_eq!(locked[0].last_name, "Lee");
    let c2 = directory.by_email("nobody@x.example").await.unwrap();
    assert!(c2.is_empty());

    let summary = format_report(&report, OutputFormat::Table);
    assert!(
        summary.contains("imported") && summary.contains('2'),
        "{summary}"
    );
}

#[tokio::test]
async fn invalid_records_are_reported_by_line_and_nothing_is_imported() {
    let directory = directory().await;
    let json = r#"[
  {"memberId": "A1", "lastName": "Ok", "emails": [], "status": "active"},
  {"lastName": "NoId", "status": "active"},
  {
    "memberId": "A3",
    "lastName": "BadStatus",
    "status": "gone"
  },
  {"memberId": "A4", "lastName": "Mail", "emails": ["first.example.com"], "status": "active"},
  {"memberId": "A1", "lastName": "Dup", "status": "closed"},
  {"memberId": "A6", "status": "active"}
]"#;
    let report = import(&directory, "members.json", json).await;
    assert_eq!(report.imported, 0);
    assert_eq!(report.invalid_count, 5);
    let listed: Vec<String> = report.invalid.iter().map(ToString::to_string).collect();
    assert_eq!(
        listed,
        [
            "record 2 (line 3): memberId is missing",
            "record 3 (line 4): status \"gone\" is not one of active, closed, locked, unverified",
            "record 4 (line 9): e-mail 1 is not an e-mail address (no @)",
            "record 5 (line 10): duplicate memberId \"A1\" (first on line 2)",
            "record 6 (line 11): lastName is missing",
        ]
    );
    assert!(
        !listed.concat().contains("first.example.com"),
        "e-mails are not quoted"
    );
    assert_eq!(directory.count().await.unwrap(), 0, "nothing imported");

    let jsonl =
        "{\"memberId\":\"J1\",\"lastName\":\"A\",\"status\":\"active\"}\n\n{not json}\n[1]\n";
    let report = import(&directory, "m.jsonl", jsonl).await;
    let listed: Vec<String> = report.invalid.iter().map(ToString::to_string).collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed[0].starts_with("record 2 (line 3): not valid JSON"),
        "{listed:?}"
    );
    assert_eq!(listed[1], "record 3 (line 4): not a JSON object");

    let csv = "memberId,loyaltyNumber,firstName,lastName,emails,status\n\
               C1,1,A,B,a@b.example,active\n\
               C2,1,A,,a@b.example,active\n\
               C3,1,A,B,bad-address;a@b.example,active\n\
               C4,1,A,B\n";
    let report = import(&directory, "m.csv", csv).await;
    let listed: Vec<String> = report.invalid.iter().map(ToString::to_string).collect();
    assert_eq!(
        listed,
        [
            "record 2 (line 3): lastName is missing",
            "record 3 (line 4): e-mail 1 is not an e-mail address (no @)",
            "record 4 (line 5): unreadable CSV row: 4 fields where the header has 6",
        ]
    );
    let bad_header = import(&directory, "h.csv", "id,name\n1,x\n").await;
    assert!(bad_header.invalid[0]
        .message
        .contains("lacks memberId, lastName, status"));
    assert_eq!(directory.count().await.unwrap(), 0, "nothing imported");
    // A refused file writes no manifest: the directory stays not ready.
    assert_eq!(directory.health().await.unwrap().members, None);

    let text = format_report(&report, OutputFormat::Table);
    assert!(
        text.contains("3 invalid record(s); nothing imported"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&format_report(&report, OutputFormat::Json)).unwrap();
    assert_eq!(json["invalid"][0]["line"], 3);
}

#[tokio::test]
async fn at_most_twenty_errors_are_listed_and_a_dry_run_writes_nothing() {
    let directory = directory().await;
    let many: String = (0..25)
        .map(|i| format!("{{\"memberId\":\"X{i}\",\"status\":\"active\"}}\n"))
        .collect();
    let report = import(&directory, "many.jsonl", &many).await;
    assert_eq!((report.invalid_count, report.invalid.len()), (25, 20));
    assert!(format_report(&report, OutputFormat::Table).contains("... and 5 more"));

    let good = "[{\"memberId\":\"D1\",\"lastName\":\"Dry\",\"status\":\"active\"}]";
    let (_dir, dry) = file("dry.json", good);
    let report = import_file(&directory, &dry, &options(true)).await.unwrap();
    assert_eq!((report.records, report.imported, report.skipped), (1, 0, 1));
    assert_eq!(directory.count().await.unwrap(), 0);

    let empty = import(&directory, "empty.json", "[]").await;
    assert_eq!(empty.invalid[0].message, "the file holds no member records");

    let missing = import_file(
        &directory,
        &PathBuf::from("/nonexistent/m.json"),
        &options(false),
    )
    .await
    .unwrap_err();
    assert!(
        missing
            .to_string()
            .starts_with("cannot read /nonexistent/m.json"),
        "{missing}"
    );
}
