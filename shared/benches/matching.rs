//! Benchmark (criterion): throughput of the matching engine, for the record (issue 14).
//!
//! `make bench`, or `cargo bench -p triplink-shared --bench matching`. Prints, per case,
//! the time of one call and its throughput (`thrpt`, calls per second):
//!
//! * `match_request/<case>/<members>`: [`match_request`] against an in-memory directory
//!   of 1, 1,000 and 100,000 members, indexed by loyalty key and by e-mail key as the
//!   DynamoDB directory is (one keyed lookup, the found members copied out), so the
//!   figure is the engine's cost (keys, name normalisation, the rules) and not a scan.
//!   Cases: `loyalty_hit` (a loyalty number and a last name written differently from the
//!   member's: upper case, no accents, a space for the hyphen), `email_fallback` (no
//!   loyalty number, two verified addresses of which the second is the member's) and
//!   `miss` (an unknown loyalty number: `CREU1`).
//! * `normalize_name/<case>`: [`normalize_name`] on a short ASCII name, a long
//!   multi-part name with accents, and names in Greek, Cyrillic, full-width and
//!   German/Nordic letters.
//!
//! No timing is asserted; bench/README.md keeps one run's figures.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::executor::block_on;
use triplink_shared::matching::{email_key, loyalty_key, normalize_name};
use triplink_shared::members::{
    match_request, DirectoryError, DirectoryHealth, MatchOutcome, MatchPolicy, Member,
    MemberDirectory, MemberStatus,
};
use triplink_shared::model::{ConnectionRequest, WireConnectionRequest};

const SIZES: [usize; 3] = [1, 1_000, 100_000];

/// Last names as members hold them, and as a traveller may type them in Concur.
const NAMES: [(&str, &str); 8] = [
    ("García-López", "GARCIA LOPEZ"),
    ("Müller", "MULLER"),
    ("O'Brien", "O’Brien"),
    ("Strauß", "STRAUSS"),
    ("Ødegård", "odegard"),
    ("Nguyễn", "Nguyen"),
    ("Σοφός", "ΣΟΦΟΣ"),
    ("van der Berg", "Van Der Berg"),
];

/// The directory in memory, indexed by the keys the real directories use.
struct Indexed {
    by_loyalty: HashMap<String, Vec<Member>>,
    by_email: HashMap<String, Vec<Member>>,
    members: usize,
}

impl Indexed {
    fn new(members: impl IntoIterator<Item = Member>) -> Self {
        let mut directory = Self {
            by_loyalty: HashMap::new(),
            by_email: HashMap::new(),
            members: 0,
        };
        for member in members {
            if let Some(number) = &member.loyalty_number {
                directory
                    .by_loyalty
                    .entry(loyalty_key(number))
                    .or_default()
                    .push(member.clone());
            }
            for email in &member.emails {
                directory
                    .by_email
                    .entry(email_key(email))
                    .or_default()
                    .push(member.clone());
            }
            directory.members += 1;
        }
        directory
    }
}

impl MemberDirectory for Indexed {
    async fn by_loyalty_number(&self, number: &str) -> Result<Vec<Member>, DirectoryError> {
        Ok(self
            .by_loyalty
            .get(&loyalty_key(number))
            .cloned()
            .unwrap_or_default())
    }

    async fn by_email(&self, email: &str) -> Result<Vec<Member>, DirectoryError> {
        Ok(self
            .by_email
            .get(&email_key(email))
            .cloned()
            .unwrap_or_default())
    }

    async fn health(&self) -> Result<DirectoryHealth, DirectoryError> {
        Ok(DirectoryHealth {
            members: Some(self.members as u64),
            updated_at: None,
        })
    }
}

fn member(i: usize) -> Member {
    Member {
        member_id: format!("M{i:07}"),
        loyalty_number: Some(format!("TL-{i:08}")),
        first_name: Some("Alex".into()),
        last_name: NAMES[i % NAMES.len()].0.into(),
        emails: vec![
            format!("alex.{i}@example.com"),
            format!("a{i}@mail.example"),
        ],
        status: MemberStatus::Active,
    }
}

fn request(loyalty: Option<String>, last_name: &str, emails: &[String]) -> ConnectionRequest {
    let mut wire_emails: [Option<String>; 5] = Default::default();
    for (slot, email) in wire_emails.iter_mut().zip(emails) {
        *slot = Some(email.clone());
    }
    ConnectionRequest::from_wire(WireConnectionRequest {
        id: Some("bench".into()),
        loyalty_number: loyalty,
        first_name: Some("Alex".into()),
        last_name: Some(last_name.into()),
        emails: wire_emails,
        ..Default::default()
    })
    .expect("a valid request")
}

fn matching(c: &mut Criterion) {
    let policy = MatchPolicy::default();
    let mut group = c.benchmark_group("match_request");
    group.throughput(Throughput::Elements(1));
    for size in SIZES {
        let directory = Indexed::new((0..size).map(member));
        // A member in the middle whose last name is the first of NAMES in every size,
        // so the sizes differ by the directory only.
        let target = size / 2 / NAMES.len() * NAMES.len();
        let typed = NAMES[target % NAMES.len()].1;
        let cases = [
            (
                "loyalty_hit",
                // The number as a traveller types it: lower case, spaces, no hyphen.
                request(Some(format!("tl {target:08}")), typed, &[]),
            ),
            (
                "email_fallback",
                request(
                    None,
                    typed,
                    &[
                        "someone@else.example".into(),
                        format!("A{target}@Mail.Example"),
                    ],
                ),
            ),
            ("miss", request(Some("TL-99999999".into()), typed, &[])),
        ];
        for (name, request) in cases {
            // What each case decides, checked once outside the timing.
            let outcome = block_on(match_request(&directory, &request, &policy)).unwrap();
            match name {
                "miss" => assert_eq!(outcome, MatchOutcome::NotFound),
                _ => assert!(matches!(outcome, MatchOutcome::Matched { .. }), "{name}"),
            }
            group.bench_with_input(BenchmarkId::new(name, size), &request, |b, request| {
                b.iter(|| block_on(match_request(&directory, black_box(request), &policy)))
            });
        }
    }
    group.finish();
}

fn normalisation(c: &mut Criterion) {
    let long = "María-José Guadalupe de los Ángeles García-López y Fernández de Córdoba \
        O'Connor-Żółkiewska Ødegård-Strauß van der Berg-MacDonald";
    let cases = [
        ("ascii_short", "Smith".to_owned()),
        ("long_multipart", long.to_owned()),
        ("long_x4", [long; 4].join(" ")),
        ("greek", "ΣΟΦΟΚΛΗΣ Παπαδόπουλος-Ἀθηναῖος".to_owned()),
        ("cyrillic", "Иванова-Щербакова Ёлкина".to_owned()),
        ("fullwidth", "ＭＵＬＬＥＲ－ＳＣＨＭＩＤＴ".to_owned()),
    ];
    let mut group = c.benchmark_group("normalize_name");
    group.throughput(Throughput::Elements(1));
    for (name, input) in cases {
        group.bench_with_input(BenchmarkId::from_parameter(name), &input, |b, input| {
            b.iter(|| normalize_name(black_box(input)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = matching, normalisation
}
criterion_main!(benches);
