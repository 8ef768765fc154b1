//! `triplink`, the operator tool of the TripLink connector: see where requests stand,
//! look at one, send it (or every parked one) back for processing, review a dry run,
//! check a deployment before its schedule is enabled, re-drive the worker's dead-letter
//! queue and bulk-load members.
//!
//! `main.rs` only parses the command line and calls [`run`]; every command lives in its
//! own module and takes the shared crate's store and directory types (or small traits),
//! so the tests run them against a local DynamoDB (moto) and the Concur sandbox.

pub mod aws;
pub mod dlq;
pub mod dry_run;
pub mod members;
pub mod output;
pub mod preflight;
pub mod retry;
pub mod show;
pub mod status;
pub mod tokens;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use triplink_shared::config::{ConcurSettings, Env};
use triplink_shared::members::DynamoMemberDirectory;
use triplink_shared::store::layout::DEFAULT_RETENTION_DAYS;
use triplink_shared::store::DynamoRequestStore;
use triplink_shared::vault::{KmsEncryptor, TokenVault};

pub use output::OutputFormat;

/// A failure of a command: one line saying what and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliError(pub String);

impl CliError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl From<triplink_shared::store::StoreError> for CliError {
    fn from(e: triplink_shared::store::StoreError) -> Self {
        Self(aws::concise(&e.to_string()))
    }
}

/// Operator tool for the TripLink connector for SAP Concur: inspect and re-drive
/// connection requests, re-drive the worker's dead-letter queue, import members.
///
/// AWS access uses the default configuration chain (environment, profile, SSO, instance
/// role). For a local DynamoDB (e.g. moto) pass --endpoint-url; with a loopback endpoint
/// and no credentials configured, dummy credentials are used.
#[derive(Debug, Parser)]
#[command(name = "triplink", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOptions,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Clone, Args)]
pub struct GlobalOptions {
    /// Send every AWS call to this endpoint (e.g. http://127.0.0.1:5000 for moto).
    #[arg(long, env = "AWS_ENDPOINT_URL", global = true, value_name = "URL")]
    pub endpoint_url: Option<String>,

    /// AWS region (default: from the environment or profile; us-east-1 when
    /// --endpoint-url is given and none is configured).
    #[arg(long, global = true)]
    pub region: Option<String>,

    /// The requests table.
    #[arg(
        long,
        env = "REQUESTS_TABLE",
        default_value = "triplink-requests",
        global = true,
        value_name = "NAME"
    )]
    pub requests_table: String,

    /// The members table.
    #[arg(
        long,
        env = "MEMBERS_TABLE",
        default_value = "triplink-members",
        global = true,
        value_name = "NAME"
    )]
    pub members_table: String,

    /// The connections table (the token vault): `tokens`, `connections` and `preflight`.
    #[arg(
        long,
        env = "CONNECTIONS_TABLE",
        default_value = "triplink-connections",
        global = true,
        value_name = "NAME"
    )]
    pub connections_table: String,

    /// The KMS key of the refresh tokens (`connections revoke`, `preflight`).
    #[arg(long, env = "KMS_KEY_ID", global = true, value_name = "KEY")]
    pub kms_key_id: Option<String>,

    /// Output format: a human-readable table, or JSON for scripts.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table, global = true)]
    pub output: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The member directory's health; requests by state and by outcome; requeued,
    /// stuck and parked requests (by reason).
    ///
    /// Stuck: `working` with an expired lease, or `decided` for more than 15 minutes.
    /// The directory is ready when its manifest (written by `members import`) counts at
    /// least one member; until then the worker decides no CREU*.
    Status,
    /// Show one request: state, attempt, timestamps, lease, decision and history.
    ///
    /// Names, loyalty number and e-mails are masked unless --reveal is given. The
    /// request token is never shown.
    Show {
        /// The request id (Concur's `ID`).
        id: String,
        /// Show names, loyalty number and e-mails unmasked.
        #[arg(long)]
        reveal: bool,
    },
    /// Send one request (or every parked request) back for processing: re-arm it as
    /// the poller's sweep does.
    ///
    /// received, working or decided (parked or not): back to `received` with its
    /// re-drive count reset, so the table's stream delivers it to the worker again; a
    /// decided status is kept and re-sent as is (never re-decided). reported or
    /// quarantined: nothing to retry.
    ///
    /// With --all-parked: every parked request (only those parked for --reason, if
    /// given), at most --max per run. This is how the connector goes live after a dry
    /// run (`--reason dry_run`), or resumes after the member data was fixed.
    Retry {
        /// The request id (Concur's `ID`).
        #[arg(required_unless_present = "all_parked", conflicts_with = "all_parked")]
        id: Option<String>,
        /// Re-arm even though a worker's lease has not expired.
        #[arg(long, conflicts_with = "all_parked")]
        force: bool,
        /// Re-arm every parked request instead of one (alias: --parked).
        #[arg(long, alias = "parked")]
        all_parked: bool,
        /// With --all-parked: only requests parked for this reason.
        #[arg(long, requires = "all_parked", conflicts_with = "id", value_parser = clap::builder::PossibleValuesParser::new(retry::PARK_REASONS))]
        reason: Option<String>,
        /// With --all-parked: re-arm at most this many requests.
        #[arg(long, requires = "all_parked", conflicts_with = "id", default_value_t = retry::DEFAULT_BULK_MAX, value_name = "N")]
        max: usize,
    },
    /// Requests decided in dry-run mode (DRY_RUN=true): nothing was sent for them.
    ///
    /// `triplink dry-run` alone is `triplink dry-run list`.
    DryRun {
        #[command(subcommand)]
        command: Option<DryRunCommand>,
    },
    /// Check everything that must work before the poller's schedule is enabled.
    ///
    /// The requests, members and connections tables; the member directory is ready
    /// (manifest with members); the KMS key encrypts and decrypts; the Concur settings
    /// (CONCUR_API_BASE_URL, CONCUR_CLIENT_ID, CONCUR_CLIENT_SECRET_SOURCE, ... as the
    /// functions read them) give an app token and one page of connection requests
    /// (limit 1, read-only). One line per check; fails if any check fails.
    /// The KMS key is the global `--kms-key-id` (KMS_KEY_ID), the connections table the
    /// global `--connections-table` (CONNECTIONS_TABLE).
    Preflight,
    /// The worker's dead-letter queue (its Lambda on-failure destination).
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// The members table.
    Members {
        #[command(subcommand)]
        command: MembersCommand,
    },
    /// Count the stored refresh tokens by state and by age (counts only, never a value).
    Tokens,
    /// Members' Concur connections (the token vault).
    Connections {
        #[command(subcommand)]
        command: ConnectionsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConnectionsCommand {
    /// Revoke a member's connection at Concur (DELETE /app-mgmt/v0/connections with the
    /// user's token) and delete it from the vault (the member unlinked).
    ///
    /// Needs the Concur settings of the functions (CONCUR_API_BASE_URL,
    /// CONCUR_CLIENT_SECRET_SOURCE, ...) and KMS_KEY_ID. A connection Concur already
    /// refuses (expired or revoked) is only deleted.
    Revoke {
        /// The member id.
        member_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DryRunCommand {
    /// List requests parked by the dry run: id, attempt, the status the worker would
    /// have sent, why and when; counts by would-be status. No personal data.
    List,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Re-drive the requests of failed stream batches, then delete their messages.
    ///
    /// Each message names a batch of the requests table's stream; its records are read
    /// again, and `retry` is applied to each request they name. A message whose records
    /// are no longer in the stream (older than 24 h) is left in the queue and reported.
    Redrive {
        /// URL of the SQS queue.
        #[arg(long, env = "DLQ_URL", value_name = "URL")]
        queue_url: String,
        /// Handle at most this many messages.
        #[arg(long, default_value_t = 100, value_name = "N")]
        max: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// Bulk-load members from a JSON array, JSON Lines or CSV file.
    ///
    /// JSON: objects with memberId, loyaltyNumber (or null), firstName, lastName,
    /// emails (array), status (active, closed, locked, unverified); other fields are
    /// ignored. CSV: header memberId,loyaltyNumber,firstName,lastName,emails,status with
    /// e-mails separated by `;`. Every record is validated first; if any is invalid,
    /// nothing is imported. A member already in the table is replaced.
    Import {
        /// The members file.
        file: PathBuf,
        /// Validate and count only; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// File format (default: from the extension, else from the content).
        #[arg(long, value_enum, default_value_t = members::Format::Auto)]
        format: members::Format,
        /// Members written at once.
        #[arg(long, default_value_t = 16, value_name = "N")]
        concurrency: usize,
    },
}

/// What a command printed and whether it fully succeeded.
pub struct Finished {
    pub text: String,
    pub success: bool,
}

fn retention_days(env: &impl Env) -> Result<i64, CliError> {
    let days: i64 = env
        .parsed("FINISHED_RETENTION_DAYS", DEFAULT_RETENTION_DAYS)
        .map_err(|e| CliError(e.to_string()))?;
    if days < 1 {
        return Err(CliError::new("FINISHED_RETENTION_DAYS must be at least 1"));
    }
    Ok(days)
}

/// Run a parsed command line; `env` supplies the Concur settings (the process
/// environment in `main`).
pub async fn execute<E: Env + Send + Sync>(cli: Cli, env: E) -> Result<Finished, CliError> {
    let global = cli.global;
    let format = global.output;
    let aws = aws::sdk_config(global.endpoint_url.as_deref(), global.region.as_deref()).await?;
    let dynamo = aws_sdk_dynamodb::Client::new(&aws);
    let store = DynamoRequestStore::new(dynamo.clone(), global.requests_table.clone())
        .with_retention_days(retention_days(&env)?);
    match cli.command {
        Command::Status => {
            let mut report =
                status::status(&dynamo, &global.requests_table, chrono::Utc::now()).await?;
            report.directory =
                Some(status::DirectoryReport::configured(&aws, &env, &global.members_table).await);
            Ok(output::finished(&report, format, true))
        }
        Command::Show { id, reveal } => {
            let view = show::show(&store, &id, reveal, chrono::Utc::now()).await?;
            Ok(output::finished(&view, format, true))
        }
        Command::Retry {
            id: Some(id),
            force,
            all_parked: false,
            ..
        } => {
            let report = retry::retry_command(&store, &id, force).await?;
            Ok(output::finished(&report, format, true))
        }
        Command::Retry {
            all_parked: true,
            reason,
            max,
            ..
        } => {
            let report = retry::retry_parked(&store, reason.as_deref(), max).await?;
            let success = report.failed == 0;
            Ok(output::finished(&report, format, success))
        }
        Command::Retry { .. } => Err(CliError::new("retry needs a request id, or --all-parked")),
        Command::DryRun {
            command: None | Some(DryRunCommand::List),
        } => {
            let report = dry_run::list(&dynamo, &global.requests_table, None).await?;
            Ok(output::finished(&report, format, true))
        }
        Command::Preflight => {
            let targets = preflight::Targets {
                requests_table: &global.requests_table,
                members_table: &global.members_table,
                connections_table: Some(global.connections_table.as_str()),
                kms_key_id: global.kms_key_id.as_deref(),
            };
            let report = preflight::preflight(&aws, &targets, &env).await;
            let success = report.ok;
            Ok(output::finished(&report, format, success))
        }
        Command::Dlq {
            command: DlqCommand::Redrive { queue_url, max },
        } => {
            let redriver = dlq::Redriver {
                sqs: aws_sdk_sqs::Client::new(&aws),
                streams: aws_sdk_dynamodbstreams::Client::new(&aws),
                store: &store,
            };
            let report = redriver.redrive(&queue_url, max).await?;
            let success = report.left == 0;
            Ok(output::finished(&report, format, success))
        }
        Command::Members {
            command:
                MembersCommand::Import {
                    file,
                    dry_run,
                    format: file_format,
                    concurrency,
                },
        } => {
            let directory = DynamoMemberDirectory::new(dynamo, global.members_table.clone());
            let options = members::ImportOptions {
                dry_run,
                format: file_format,
                concurrency,
                progress: true,
            };
            let report = members::import_file(&directory, &file, &options).await?;
            let success = report.invalid.is_empty()
                && report.failed.is_empty()
                && report.manifest_error.is_none();
            Ok(output::finished(&report, format, success))
        }
        Command::Tokens => {
            let report =
                tokens::tokens_paged(&dynamo, &global.connections_table, chrono::Utc::now(), None)
                    .await?;
            Ok(output::finished(&report, format, true))
        }
        Command::Connections {
            command: ConnectionsCommand::Revoke { member_id },
        } => {
            let key = global
                .kms_key_id
                .clone()
                .ok_or_else(|| CliError::new("--kms-key-id (KMS_KEY_ID) is required"))?;
            let concur = ConcurSettings::from_env(&env)
                .map_err(|e| CliError(e.to_string()))?
                .client(&aws, &env)
                .await
                .map_err(|e| CliError(e.to_string()))?;
            let vault = TokenVault::new(
                dynamo,
                global.connections_table.clone(),
                KmsEncryptor::from_sdk_config(&aws, key),
            );
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
            let report = tokens::revoke(&vault, &concur, &member_id, deadline).await?;
            Ok(output::finished(&report, format, true))
        }
    }
}

/// Parse nothing, run everything: what `main` calls.
pub async fn run<E: Env + Send + Sync>(cli: Cli, env: E) -> ExitCode {
    let format = cli.global.output;
    match execute(cli, env).await {
        Ok(finished) => {
            print!("{}", finished.text);
            if finished.success {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            let message = aws::concise(&e.to_string());
            if format == OutputFormat::Json {
                println!("{}", serde_json::json!({ "error": message }));
            }
            eprintln!("triplink: error: {message}");
            ExitCode::FAILURE
        }
    }
}
