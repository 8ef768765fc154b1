//! The configured member directory: the DynamoDB members table (default) or the
//! supplier's own member service over HTTP (`MEMBER_DIRECTORY=dynamodb|http`).

use std::time::Duration;

use secrecy::SecretString;
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

impl AnyDirectory {
    /// `MEMBER_DIRECTORY` (`dynamodb`, default, with `MEMBERS_TABLE`; or `http` with
    /// `MEMBER_SERVICE_URL`, `MEMBER_SERVICE_TIMEOUT_MS` (default 2000),
    /// `MEMBER_SERVICE_AUTH_HEADER` (a header name) and `MEMBER_SERVICE_AUTH_SOURCE`
    /// (where its value comes from, like `CONCUR_CLIENT_SECRET_SOURCE`)).
    pub async fn from_env(
        env: &impl Env,
        aws: &aws_config::SdkConfig,
    ) -> Result<Self, ConfigError> {
        let kind = env
            .get("MEMBER_DIRECTORY")
            .unwrap_or_else(|| "dynamodb".into());
        match kind.trim().to_ascii_lowercase().as_str() {
            "dynamodb" => Ok(Self::Dynamo(DynamoMemberDirectory::new(
                aws_sdk_dynamodb::Client::new(aws),
                env.required("MEMBERS_TABLE")?,
            ))),
            "http" => {
                let raw = env.required("MEMBER_SERVICE_URL")?;
                let base_url = url::Url::parse(&raw)
                    .map_err(|e| invalid("MEMBER_SERVICE_URL", raw.clone(), e))?;
                let auth_header = match env.get("MEMBER_SERVICE_AUTH_HEADER") {
                    None => None,
                    Some(name) => {
                        let raw_source = env.required("MEMBER_SERVICE_AUTH_SOURCE")?;
                        let source: SecretSource = raw_source.parse().map_err(|e: String| {
                            invalid("MEMBER_SERVICE_AUTH_SOURCE", raw_source.clone(), e)
                        })?;
                        let value: SecretString = source.fetch_checked(aws, env).await?;
                        Some((name, value))
                    }
                };
                let config = HttpDirectoryConfig {
                    base_url,
                    timeout: Duration::from_millis(env.parsed("MEMBER_SERVICE_TIMEOUT_MS", 2000)?),
                    auth_header,
                };
                HttpMemberDirectory::new(config)
                    .map(Self::Http)
                    .map_err(|e| invalid("MEMBER_SERVICE_URL", raw, e))
            }
            _ => Err(invalid(
                "MEMBER_DIRECTORY",
                kind,
                "expected dynamodb or http",
            )),
        }
    }
}
