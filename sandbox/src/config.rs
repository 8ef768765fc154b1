//! Command line and environment configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// A local, faithful Concur Connection Requests + OAuth2 server for TripLink suppliers.
///
/// Serves `POST /oauth2/v0/token`, `DELETE /app-mgmt/v0/connections`,
/// `/api/v3.0|v3.1|v3.2/common/connectionrequests/` and an admin API under
/// `/_sandbox/` (virtual clock, request states and PUT history, fault rules,
/// seeding). See sandbox/README.md.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "concur-sandbox",
    version,
    about,
    long_about = None,
    after_help = "Routes: POST /oauth2/v0/token, DELETE /app-mgmt/v0/connections, \
/api/v3.0|v3.1|v3.2/common/connectionrequests/[{id}], and the admin API under /_sandbox/ \
(clock, clock/advance, requests, summary, users, seed, verify, faults). RUST_LOG sets the log level. \
Everything is described in sandbox/README.md."
)]
pub struct Config {
    /// Address to listen on (use port 0 for any free port, with --addr-file).
    #[arg(long, env = "SANDBOX_LISTEN", default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,

    /// Write the bound address (host:port) to this file once listening.
    #[arg(long, env = "SANDBOX_ADDR_FILE")]
    pub addr_file: Option<PathBuf>,

    /// Base URL written into NextPage and URI (default: http://<bound address>).
    /// Set e.g. https://us.api.concursolutions.com to make clients see a foreign host.
    #[arg(long, env = "SANDBOX_PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,

    /// The `geolocation` returned by the token endpoint (default: the public base URL).
    #[arg(long, env = "SANDBOX_GEOLOCATION")]
    pub geolocation: Option<String>,

    /// The OAuth2 client id the token endpoint accepts.
    #[arg(long, env = "SANDBOX_CLIENT_ID", default_value = "sandbox-client")]
    pub client_id: String,

    /// The OAuth2 client secret the token endpoint accepts.
    #[arg(long, env = "SANDBOX_CLIENT_SECRET", default_value = "sandbox-secret")]
    pub client_secret: String,

    /// Lifetime of app and user access tokens, in seconds (the OAuth2 page: one hour).
    #[arg(long, env = "SANDBOX_ACCESS_TOKEN_TTL", default_value_t = 3600)]
    pub access_token_ttl: i64,

    /// Lifetime of request tokens issued on GET, in seconds (the supplier-flow diagram: 24 h).
    #[arg(long, env = "SANDBOX_REQUEST_TOKEN_TTL", default_value_t = 86_400)]
    pub request_token_ttl: i64,

    /// Lifetime of refresh tokens, in seconds (the OAuth2 page: six months; default 183 days).
    #[arg(long, env = "SANDBOX_REFRESH_TOKEN_TTL", default_value_t = 15_811_200)]
    pub refresh_token_ttl: i64,

    /// Every GET (list or by id) issues a new request token and invalidates the earlier
    /// ones of that request (they are refused with code 103), as an implementation may:
    /// request tokens are single-use and short-lived.
    #[arg(long, env = "SANDBOX_SUPERSEDE_REQUEST_TOKENS")]
    pub supersede_request_tokens: bool,

    /// HTTP status for an expired or revoked bearer token on API calls: 401, or 403
    /// as the HTTP status codes page says.
    #[arg(long, env = "SANDBOX_EXPIRED_TOKEN_STATUS", default_value_t = 401,
          value_parser = parse_expired_status)]
    pub expired_token_status: u16,

    /// Delay before a CREU1/2/3 request is requeued, in seconds.
    #[arg(long, env = "SANDBOX_CREU_DELAY", default_value_t = 86_400)]
    pub creu_delay: i64,

    /// How many times CREU* may requeue one request; the next CREU* ends it in an error state.
    #[arg(long, env = "SANDBOX_CREU_MAX_REQUEUES", default_value_t = 4)]
    pub creu_max_requeues: u32,

    /// Delay before a CRRET (or CRPA1/CRPA2) request is requeued, in seconds.
    #[arg(long, env = "SANDBOX_CRRET_DELAY", default_value_t = 3600)]
    pub crret_delay: i64,

    /// How many times CRRET may requeue one request; the next CRRET ends it in an error state.
    #[arg(long, env = "SANDBOX_CRRET_MAX_REQUEUES", default_value_t = 48)]
    pub crret_max_requeues: u32,

    /// RNG seed: the seeded users, request ids and tokens are the same for the same seed.
    #[arg(long, env = "SANDBOX_SEED")]
    pub seed: Option<u64>,

    /// Create this many seeded users at start, each with one pending connection request.
    #[arg(long, env = "SANDBOX_USERS", default_value_t = 0)]
    pub users: usize,

    /// Write the supplier's member directory for the seeded users to this JSON file.
    #[arg(long, env = "SANDBOX_MEMBERS_OUT")]
    pub members_out: Option<PathBuf>,

    /// Write the expected status of every seeded request to this JSON file
    /// (default: next to --members-out, as <name>.expected.json).
    #[arg(long, env = "SANDBOX_EXPECTED_OUT")]
    pub expected_out: Option<PathBuf>,

    /// A fault rule, ROUTE:KIND[:OPTION]... (repeatable), e.g. `put:503:next=2`,
    /// `list:latency=800:p=0.5`, `any:429:retry-after=3:next=1`, `get:drop`.
    /// ROUTE: token|list|get|put|create|revoke|any. KIND: latency=MS|429|500|503|
    /// 500-after|503-after|drop|drop-after|slow=MS|malformed|error200|xml.
    /// OPTION: next=N|p=PROBABILITY|retry-after=SECONDS. In SANDBOX_FAULTS, separate rules with commas.
    #[arg(long = "fault", env = "SANDBOX_FAULTS", value_delimiter = ',')]
    pub faults: Vec<String>,

    /// Seed of the RNG that decides probabilistic faults (p=...).
    #[arg(long, env = "SANDBOX_FAULT_SEED", default_value_t = 0)]
    pub fault_seed: u64,

    /// Start the virtual clock at this RFC 3339 time (default: now).
    #[arg(long, env = "SANDBOX_CLOCK_START")]
    pub clock_start: Option<String>,

    /// Freeze the virtual clock: it moves only on POST /_sandbox/clock/advance.
    #[arg(long, env = "SANDBOX_FROZEN_CLOCK")]
    pub frozen_clock: bool,
}

impl Config {
    /// Defaults for an in-process test server: any free loopback port, a frozen
    /// clock starting at 2026-01-01T00:00:00Z, seed 1.
    pub fn for_tests() -> Self {
        let mut c = Self::parse_from(["concur-sandbox"]);
        c.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        c.frozen_clock = true;
        c.clock_start = Some("2026-01-01T00:00:00Z".into());
        c.seed = Some(1);
        c.faults.clear();
        c
    }
}

fn parse_expired_status(s: &str) -> Result<u16, String> {
    match s.trim() {
        "401" => Ok(401),
        "403" => Ok(403),
        other => Err(format!("{other:?}: expected 401 or 403")),
    }
}
