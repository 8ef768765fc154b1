//! The configured member directory: the DynamoDB members table (default) or the
//! supplier's own member service over HTTP (`MEMBER_DIRECTORY=dynamodb|http`).

use std::time::Duration;

use triplink_shared::config::{ConfigError, Env, SecretSource};
use triplink_shared::matching::Member;
use triplink_shared::members::dynamo::DynamoMemberDirectory;
use triplink_shared::members::http::{HttpDirectoryConfig, HttpMemberDirectory};
use triplink_shared::members::{DirectoryError, DirectoryHealth, MemberDirectory};

pub enum AnyDirectory {
    Dynamo(DynamoMemberDirectory),
    Http(HttpMemberDirectory),
}

impl MemberDirectory for AnyDirectory {
    async fn by_loyalty_number(&self, loyalty_number: &str) -> Result<Vec<Member>, DirectoryError> {
        match self {
            Self::Dynamo(d) => d.by_loyalty_number(loyalty_number).await,
            Self::Http(d) => d.by_loyalty_number(loyalty_number).await,
        }
    }
    async fn by_email(&self, email: &str) -> Result<Vec<Member>, DirectoryError> {
        match self {
            Self::Dynamo(d) => d.by_email(email).await,
            Self::Http(d) => d.by_email(email).await,
        }
    }
    async fn health(&self) -> Result<DirectoryHealth, DirectoryError> {
        match self {
            Self::Dynamo(d) => d.health().await,
            Self::Http(d) => d.health().await,
        }
    }
}

fn invalid(key: &'static str, value: String, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key,
        value,
        reason: reason.to_string(),
    }
}

/// The directory as configured, checked with no network call; [`DirectorySpec::build`]
/// fetches the member service's credentials, if any.
#[derive(Debug, Clone)]
pub enum DirectorySpec {
    Dynamo {
        table: String,
    },
    Http {
        base_url: url::Url,
        timeout: Duration,
        auth: Option<(String, SecretSource)>,
    },
}

impl DirectorySpec {
    /// `MEMBER_DIRECTORY` (`dynamodb`, default, with `MEMBERS_TABLE`; or `http` with
    /// `MEMBER_SERVICE_URL`, `MEMBER_SERVICE_TIMEOUT_MS` (default 2000),
    /// `MEMBER_SERVICE_AUTH_HEADER` (a header name) and `MEMBER_SERVICE_AUTH_SOURCE`
    /// (where its value comes from, like `CONCUR_CLIENT_SECRET_SOURCE`)).
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let kind = env
            .get("MEMBER_DIRECTORY")
            .unwrap_or_else(|| "dynamodb".into());
        match kind.trim().to_ascii_lowercase().as_str() {
            "dynamodb" => Ok(Self::Dynamo {
                table: env.required("MEMBERS_TABLE")?,
            }),
            "http" => {
                let raw = env.required("MEMBER_SERVICE_URL")?;
                let base_url = url::Url::parse(&raw)
                    .map_err(|e| invalid("MEMBER_SERVICE_URL", raw.clone(), e))?;
                let auth = match env.get("MEMBER_SERVICE_AUTH_HEADER") {
                    None => None,
                    Some(name) => {
                        let raw_source = env.required("MEMBER_SERVICE_AUTH_SOURCE")?;
                        let source: SecretSource = raw_source.parse().map_err(|e: String| {
                            invalid("MEMBER_SERVICE_AUTH_SOURCE", raw_source.clone(), e)
                        })?;
                        source.check(env)?;
                        Some((name, source))
                    }
                };
                let timeout = Duration::from_millis(env.parsed("MEMBER_SERVICE_TIMEOUT_MS", 2000)?);
                // The URL's own rules (https, no query...) are checked now, not later.
                HttpMemberDirectory::new(HttpDirectoryConfig {
                    base_url: base_url.clone(),
                    timeout,
                    auth_header: None,
                })
                .map_err(|e| invalid("MEMBER_SERVICE_URL", raw, e))?;
                Ok(Self::Http {
                    base_url,
                    timeout,
                    auth,
                })
            }
            _ => Err(invalid(
                "MEMBER_DIRECTORY",
                kind,
                "expected dynamodb or http",
            )),
        }
    }

    /// The directory, with the member service's credentials fetched.
    pub async fn build(
        &self,
        env: &impl Env,
        aws: &aws_config::SdkConfig,
    ) -> Result<AnyDirectory, ConfigError> {
        match self {
            Self::Dynamo { table } => Ok(AnyDirectory::Dynamo(DynamoMemberDirectory::new(
                aws_sdk_dynamodb::Client::new(aws),
                table.clone(),
            ))),
            Self::Http {
                base_url,
                timeout,
                auth,
            } => {
                let auth_header = match auth {
                    None => None,
                    Some((name, source)) => {
                        Some((name.clone(), source.fetch_checked(aws, env).await?))
                    }
                };
                HttpMemberDirectory::new(HttpDirectoryConfig {
                    base_url: base_url.clone(),
                    timeout: *timeout,
                    auth_header,
                })
                .map(AnyDirectory::Http)
                .map_err(|e| invalid("MEMBER_SERVICE_AUTH_HEADER", String::new(), e))
            }
        }
    }
}

impl AnyDirectory {
    /// [`DirectorySpec::from_env`], then [`DirectorySpec::build`].
    pub async fn from_env(
        env: &impl Env,
        aws: &aws_config::SdkConfig,
    ) -> Result<Self, ConfigError> {
        DirectorySpec::from_env(env)?.build(env, aws).await
    }
}
