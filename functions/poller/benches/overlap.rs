//! Benchmark: a poller run costs about the sum of its page round-trips, because each
//! page's store writes overlap with the next page's fetch.
//!
//! `make bench` (or `cargo bench -p poller --bench overlap` with `.venv/bin` on PATH).
//! Against the Concur sandbox in process (every list call given a fixed latency, like a
//! remote API) and moto on loopback, it prints for the same queue:
//! * the overlapped run (`poller::poll`) and the sum of its page round-trips;
//! * a sequential baseline (fetch a page, then write it, then the next) for comparison.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use concur_sandbox::{spawn, Config};
use futures::StreamExt;
use poller::{poll, PendingSource, PollerSettings};
use secrecy::SecretString;
use triplink_shared::concur::{BaseUrl, ConcurClient, ConcurConfig, ConcurError, Page};
use triplink_shared::store::{tables, DynamoRequestStore, RequestStore};
use triplink_shared::testing;

const USERS: usize = 200;
const LIST_LATENCY_MS: u64 = 60;
const RUNS: usize = 3;

/// Sums the time spent in list calls.
struct Timed<'a> {
    inner: &'a ConcurClient,
    spent_us: AtomicU64,
}

impl PendingSource for Timed<'_> {
    async fn list_page(
        &self,
        limit: u32,
        offset: Option<&str>,
        deadline: tokio::time::Instant,
    ) -> Result<Page, ConcurError> {
        let started = Instant::now();
        let page = self.inner.list_page(limit, offset, deadline).await;
        self.spent_us
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        page
    }
}

async fn store() -> DynamoRequestStore {
    let client = testing::dynamodb();
    let table = testing::unique_name("bench");
    tables::create_requests_table(&client, &table)
        .await
        .unwrap();
    DynamoRequestStore::new(client, table)
}

fn far() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(300)
}

#[tokio::main]
async fn main() {
    let settings = PollerSettings {
        max_pages: 1000,
        ..PollerSettings::default()
    };
    println!(
        "poller overlap benchmark: {USERS} requests, {} per page, list latency {LIST_LATENCY_MS} ms, {RUNS} runs each",
        settings.page_limit
    );
    let (mut overlapped, mut fetch_sums, mut sequential) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let mut config = Config::for_tests();
        config.users = USERS;
        config.faults = vec![format!("list:latency={LIST_LATENCY_MS}")];
        let sandbox = spawn(config).await.unwrap();
        let concur = ConcurClient::new(ConcurConfig::new(
            BaseUrl::parse(&sandbox.local_url).unwrap(),
            "sandbox-client",
            SecretString::from("sandbox-secret"),
        ))
        .unwrap();
        concur.app_token(far()).await.unwrap();

        // Overlapped: the poller itself.
        let timed = Timed {
            inner: &concur,
            spent_us: AtomicU64::new(0),
        };
        let store_a = store().await;
        let started = Instant::now();
        let summary = poll(&timed, &store_a, &settings, far()).await.unwrap();
        overlapped.push(started.elapsed());
        fetch_sums.push(Duration::from_micros(
            timed.spent_us.load(Ordering::Relaxed),
        ));
        assert_eq!(summary.new as usize, USERS);

        // Sequential baseline: fetch, write, fetch, write...
        let store_b = store().await;
        let started = Instant::now();
        let mut offset: Option<String> = None;
        let mut written = 0;
        for _ in 0..settings.max_pages {
            let page = concur
                .list_page(settings.page_limit, offset.as_deref(), far())
                .await
                .unwrap();
            let results: Vec<_> = futures::stream::iter(page.items)
                .map(|r| {
                    let store = &store_b;
                    async move {
                        let now = chrono::Utc::now();
                        store.record_polled(&r, now, now).await
                    }
                })
                .buffer_unordered(settings.write_concurrency)
                .collect()
                .await;
            written += results.len();
            match page.next_offset {
                Some(next) => offset = Some(next),
                None => break,
            }
        }
        sequential.push(started.elapsed());
        assert_eq!(written, USERS);
        sandbox.shutdown().await.unwrap();
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (run, fetch, seq) = (
        median(&mut overlapped),
        median(&mut fetch_sums),
        median(&mut sequential),
    );
    let pages = USERS.div_ceil(10) as u32;
    println!("pages per run:                         {pages}");
    println!(
        "sum of page round-trips (median):      {:>8.1} ms",
        fetch.as_secs_f64() * 1e3
    );
    println!(
        "overlapped run, poller::poll (median): {:>8.1} ms",
        run.as_secs_f64() * 1e3
    );
    println!(
        "sequential fetch-then-write (median):  {:>8.1} ms",
        seq.as_secs_f64() * 1e3
    );
    println!(
        "overlapped run / sum of round-trips:   {:>8.2}",
        run.as_secs_f64() / fetch.as_secs_f64()
    );
    println!(
        "store time hidden behind fetches:      {:>8.1} ms",
        (seq.as_secs_f64() - run.as_secs_f64()) * 1e3
    );
}
