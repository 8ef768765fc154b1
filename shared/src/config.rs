//! Configuration from the environment, and where secrets come from.
//!
//! Every variable the functions read is documented in the README's configuration
//! reference. The Concur client secret comes from `CONCUR_CLIENT_SECRET_SOURCE`:
//!
//! | source | meaning |
//! | --- | --- |
//! | `secretsmanager:<id or ARN>` | AWS Secrets Manager (the cloud default) |
//! | `ssm:<parameter name>` | SSM Parameter Store, decrypted (`SecureString`) |
//! | `env:<VARIABLE>` | an environment variable — local runs only |
//! | `file:<path>` | a file — local runs only |
//!
//! The secret is either the client secret itself or a JSON object
//! `{"client_id": "...", "client_secret": "..."}` (the `client_id` there wins over
//! `CONCUR_CLIENT_ID`). Inside a Lambda execution environment (`AWS_LAMBDA_FUNCTION_NAME`
//! is set: in AWS, and under `sam local invoke` or `cargo lambda watch`), `env:` and
//! `file:` are refused unless [`ALLOW_ENV_SECRETS`]` =1` says this is a local run: a
//! secret never sits in a plain environment variable in the cloud, and the template sets
//! that variable only for a local stack.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub use aws_config::SdkConfig;
use secrecy::{ExposeSecret, SecretString};

use crate::concur::{
    ApiVersion, BaseUrl, ConcurClient, ConcurConfig, RetryPolicy, DEFAULT_CALL_TIMEOUT,
};

/// A configuration problem, named by its variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{key}={value:?} is invalid: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("cannot read the Concur client secret from {source_name}: {message}")]
    Secret {
        source_name: String,
        message: String,
    },
}

/// Reads variables: the process environment, or a map in tests.
pub trait Env {
    fn var(&self, key: &str) -> Option<String>;

    /// A set, non-blank value.
    fn get(&self, key: &str) -> Option<String> {
        self.var(key).filter(|v| !v.trim().is_empty())
    }

    fn required(&self, key: &'static str) -> Result<String, ConfigError> {
        self.get(key).ok_or(ConfigError::Missing(key))
    }

    /// A parsed value, or `default` when unset.
    fn parsed<T>(&self, key: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(value) => value
                .trim()
                .parse()
                .map_err(|e: T::Err| ConfigError::Invalid {
                    key,
                    reason: e.to_string(),
                    value,
                }),
        }
    }
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl Env for std::collections::HashMap<String, String> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }
}

fn base_url(env: &impl Env, key: &'static str) -> Result<Option<BaseUrl>, ConfigError> {
    env.get(key)
        .map(|value| {
            BaseUrl::parse(&value).map_err(|e| ConfigError::Invalid {
                key,
                value,
                reason: e.to_string(),
            })
        })
        .transpose()
}

/// The explicit local override: `1` lets a Lambda execution environment read its
/// secrets from `env:` and `file:` sources (`sam local invoke`, `cargo lambda watch`).
pub const ALLOW_ENV_SECRETS: &str = "TRIPLINK_ALLOW_ENV_SECRETS";

/// Whether `env:` and `file:` secret sources may be used here: always outside a Lambda
/// execution environment (tests, the CLI); inside one (`AWS_LAMBDA_FUNCTION_NAME` set)
/// only with [`ALLOW_ENV_SECRETS`]`=1`. `AWS_SAM_LOCAL` alone does not allow them.
pub fn local_secrets_allowed(env: &impl Env) -> Result<bool, ConfigError> {
    let allowed = match env.get(ALLOW_ENV_SECRETS) {
        None => false,
        Some(value) => match value.trim().to_ascii_lowercase().as_str() {
            "1" | "true" => true,
            "0" | "false" => false,
            _ => {
                return Err(ConfigError::Invalid {
                    key: ALLOW_ENV_SECRETS,
                    value,
                    reason: "expected 1 (allow env: and file: secret sources) or 0".into(),
                })
            }
        },
    };
    Ok(allowed || env.get("AWS_LAMBDA_FUNCTION_NAME").is_none())
}

/// Why an `env:` or `file:` source is refused in a Lambda execution environment.
pub const LOCAL_SOURCE_REFUSAL: &str = "env: and file: sources are for local runs only: \
AWS_LAMBDA_FUNCTION_NAME is set and TRIPLINK_ALLOW_ENV_SECRETS is not 1. In AWS use \
secretsmanager: or ssm:; for a local run (sam local invoke, cargo lambda watch) set \
TRIPLINK_ALLOW_ENV_SECRETS=1";

/// True inside a deployed Lambda function (not `sam local invoke`).
pub fn in_deployed_lambda(env: &impl Env) -> bool {
    env.get("AWS_LAMBDA_FUNCTION_NAME").is_some()
        && !env
            .get("AWS_SAM_LOCAL")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Connect timeout of an AWS call: the regional endpoints answer a TCP and TLS
/// handshake in milliseconds from Lambda.
pub const SDK_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// One attempt of an AWS call (DynamoDB, KMS, Secrets Manager, SSM): they answer in tens
/// of milliseconds; an attempt that hangs is cut off and retried.
pub const SDK_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// A whole AWS call, retries and backoff included. Not longer than the poller's default
/// `POLL_DEADLINE_MARGIN_MS` (5 s): a call started before the poller stops paging ends
/// before its deadline; the worker, whose margin is 3 s, holds its lease 2 s past its
/// deadline, and the template's smallest timeout (10 s) leaves room for one call.
pub const SDK_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts of an AWS call (throttling, 5xx, timeouts, broken connections).
pub const SDK_MAX_ATTEMPTS: u32 = 3;
/// The longest backoff between attempts (the SDK's default is 20 s, far past a deadline).
pub const SDK_MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The timeouts of every AWS call of the functions ([`SDK_CONNECT_TIMEOUT`],
/// [`SDK_ATTEMPT_TIMEOUT`], [`SDK_OPERATION_TIMEOUT`]; an attempt's read is bounded by
/// its attempt timeout).
pub fn sdk_timeout_config() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(SDK_CONNECT_TIMEOUT)
        .operation_attempt_timeout(SDK_ATTEMPT_TIMEOUT)
        .operation_timeout(SDK_OPERATION_TIMEOUT)
        .build()
}

/// The retries of every AWS call: the standard mode (not adaptive: its client-side rate
/// limiter would make a call wait for tokens, which a warm function carries from one
/// invocation to the next, with no regard for the deadline), [`SDK_MAX_ATTEMPTS`]
/// attempts, backoff at most [`SDK_MAX_BACKOFF`].
pub fn sdk_retry_config() -> aws_config::retry::RetryConfig {
    aws_config::retry::RetryConfig::standard()
        .with_max_attempts(SDK_MAX_ATTEMPTS)
        .with_max_backoff(SDK_MAX_BACKOFF)
}

/// The AWS SDK configuration of a function, from its environment alone: the region
/// (`AWS_REGION`, else `AWS_DEFAULT_REGION`), the execution role's credentials from
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` (Lambda exports
/// them), `AWS_ENDPOINT_URL` when set (local runs), the shared HTTP stack
/// ([`crate::http`]), and explicit timeouts and retries ([`sdk_timeout_config`],
/// [`sdk_retry_config`]). No profile file, IMDS or STS: nothing is read or fetched at
/// init.
pub fn lambda_sdk_config(env: &impl Env) -> Result<SdkConfig, ConfigError> {
    use aws_config::environment::EnvironmentVariableCredentialsProvider;
    use aws_config::{BehaviorVersion, Region};
    use aws_credential_types::provider::SharedCredentialsProvider;

    let region = env
        .get("AWS_REGION")
        .or_else(|| env.get("AWS_DEFAULT_REGION"))
        .ok_or(ConfigError::Missing("AWS_REGION"))?;
    let mut builder = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region))
        .credentials_provider(SharedCredentialsProvider::new(
            EnvironmentVariableCredentialsProvider::new(),
        ))
        .http_client(crate::http::sdk_http_client())
        .timeout_config(sdk_timeout_config())
        .retry_config(sdk_retry_config());
    if let Some(endpoint) = env.get("AWS_ENDPOINT_URL") {
        builder = builder.endpoint_url(endpoint.trim());
    }
    Ok(builder.build())
}

/// Where the Concur client secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    SecretsManager(String),
    Ssm(String),
    Env(String),
    File(PathBuf),
}

impl FromStr for SecretSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, rest) = s.trim().split_once(':').ok_or_else(|| {
            "expected secretsmanager:ID, ssm:NAME, env:VAR or file:PATH".to_owned()
        })?;
        if rest.trim().is_empty() {
            return Err(format!("{kind}: names nothing"));
        }
        let rest = rest.trim().to_owned();
        match kind.to_ascii_lowercase().as_str() {
            "secretsmanager" => Ok(Self::SecretsManager(rest)),
            "ssm" => Ok(Self::Ssm(rest)),
            "env" => Ok(Self::Env(rest)),
            "file" => Ok(Self::File(PathBuf::from(rest))),
            other => Err(format!(
                "unknown source {other:?}: expected secretsmanager, ssm, env or file"
            )),
        }
    }
}

impl SecretSource {
    fn name(&self) -> String {
        match self {
            Self::SecretsManager(id) => format!("secretsmanager:{id}"),
            Self::Ssm(name) => format!("ssm:{name}"),
            Self::Env(var) => format!("env:{var}"),
            Self::File(path) => format!("file:{}", path.display()),
        }
    }

    /// Refuse `env:`/`file:` in a Lambda execution environment without the local
    /// override ([`local_secrets_allowed`]; no fetch, no network).
    pub fn check(&self, env: &impl Env) -> Result<(), ConfigError> {
        if self.is_local_only() && !local_secrets_allowed(env)? {
            return Err(ConfigError::Secret {
                source_name: self.name(),
                message: LOCAL_SOURCE_REFUSAL.into(),
            });
        }
        Ok(())
    }

    /// Fetch the secret, refusing `env:`/`file:` as [`Self::check`] does.
    pub async fn fetch_checked(
        &self,
        aws: &SdkConfig,
        env: &impl Env,
    ) -> Result<SecretString, ConfigError> {
        self.check(env)?;
        let secret = self.fetch(aws, env).await?;
        Ok(SecretString::from(secret.expose_secret().trim().to_owned()))
    }

    fn is_local_only(&self) -> bool {
        matches!(self, Self::Env(_) | Self::File(_))
    }

    async fn fetch(&self, aws: &SdkConfig, env: &impl Env) -> Result<SecretString, ConfigError> {
        let fail = |message: String| ConfigError::Secret {
            source_name: self.name(),
            message,
        };
        let text = match self {
            Self::SecretsManager(id) => aws_sdk_secretsmanager::Client::new(aws)
                .get_secret_value()
                .secret_id(id)
                .send()
                .await
                .map_err(|e| {
                    fail(aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string())
                })?
                .secret_string
                .ok_or_else(|| fail("the secret has no string value".into()))?,
            Self::Ssm(name) => aws_sdk_ssm::Client::new(aws)
                .get_parameter()
                .name(name)
                .with_decryption(true)
                .send()
                .await
                .map_err(|e| fail(aws_sdk_ssm::error::DisplayErrorContext(e).to_string()))?
                .parameter
                .and_then(|p| p.value)
                .ok_or_else(|| fail("the parameter has no value".into()))?,
            Self::Env(var) => env
                .get(var)
                .ok_or_else(|| fail(format!("{var} is not set")))?,
            Self::File(path) => std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?,
        };
        Ok(SecretString::from(text))
    }
}

/// The app's OAuth2 client credentials.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: SecretString,
}

/// Split a fetched secret into credentials: a JSON object with `client_secret` (and
/// optionally `client_id`), or the bare secret with the id from configuration.
pub fn credentials_from_secret(
    secret: &SecretString,
    configured_id: Option<String>,
) -> Result<ClientCredentials, String> {
    let text = secret.expose_secret().trim();
    if text.starts_with('{') {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|_| "the secret is not valid JSON".to_owned())?;
        let field = |name: &str| {
            value
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let client_secret = field("client_secret")
            .ok_or_else(|| "the JSON secret has no client_secret".to_owned())?;
        let client_id = field("client_id")
            .or(configured_id)
            .ok_or_else(|| "no client_id in the secret nor in CONCUR_CLIENT_ID".to_owned())?;
        return Ok(ClientCredentials {
            client_id,
            client_secret: SecretString::from(client_secret),
        });
    }
    if text.is_empty() {
        return Err("the secret is empty".into());
    }
    Ok(ClientCredentials {
        client_id: configured_id.ok_or_else(|| "CONCUR_CLIENT_ID is not set".to_owned())?,
        client_secret: SecretString::from(text.to_owned()),
    })
}

/// Everything needed to build the Concur client.
#[derive(Debug, Clone)]
pub struct ConcurSettings {
    pub api_base: BaseUrl,
    pub auth_base: Option<BaseUrl>,
    pub authtoken_base: Option<BaseUrl>,
    pub version: ApiVersion,
    pub client_id: Option<String>,
    pub secret_source: SecretSource,
    pub call_timeout: Duration,
    pub max_attempts: u32,
    in_deployed_lambda: bool,
}

/// Why the connector functions refuse `CONCUR_API_VERSION` 3.0 and 3.1 (README,
/// "Legacy versions").
pub const LEGACY_VERSION_REFUSAL: &str = "the connector functions need Connection Requests v3.2: \
v3.0 and v3.1 requests carry no userId, which the request-token exchange (password grant \
with credtype=authtoken, OAuth2 page) needs as its username, and their pages describe the \
request token as an OAuth 1 token. No matched user could be connected: every one would be \
sent CRRET, up to 48 times. Set CONCUR_API_VERSION=3.2 (the Concur app must be on v3.2)";

impl ConfigError {
    /// The `errorType` of a cold start that fails on this error (Lambda Runtime API
    /// `/runtime/init/error`, `Category.Reason` as AWS recommends).
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Missing(_) => "Config.Missing",
            Self::Invalid { .. } => "Config.Invalid",
            Self::Secret { .. } => "Config.SecretUnavailable",
        }
    }
}

impl ConcurSettings {
    /// [`from_env`](Self::from_env), and what the connector functions (poller and worker)
    /// need on top: Connection Requests v3.2 (see [`LEGACY_VERSION_REFUSAL`]).
    pub fn for_functions(env: &impl Env) -> Result<Self, ConfigError> {
        let settings = Self::from_env(env)?;
        if settings.version != ApiVersion::V3_2 {
            return Err(ConfigError::Invalid {
                key: "CONCUR_API_VERSION",
                value: env
                    .get("CONCUR_API_VERSION")
                    .unwrap_or_else(|| settings.version.to_string()),
                reason: LEGACY_VERSION_REFUSAL.into(),
            });
        }
        Ok(settings)
    }

    /// `CONCUR_API_BASE_URL` (required), `CONCUR_AUTH_BASE_URL`, `CONCUR_AUTHTOKEN_BASE_URL`,
    /// `CONCUR_API_VERSION` (3.2), `CONCUR_CLIENT_ID`, `CONCUR_CLIENT_SECRET_SOURCE`
    /// (required), `CONCUR_CALL_TIMEOUT_MS` (60000), `CONCUR_MAX_ATTEMPTS` (4).
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let api_base = base_url(env, "CONCUR_API_BASE_URL")?
            .ok_or(ConfigError::Missing("CONCUR_API_BASE_URL"))?;
        let raw_source = env.required("CONCUR_CLIENT_SECRET_SOURCE")?;
        let secret_source: SecretSource =
            raw_source.parse().map_err(|reason| ConfigError::Invalid {
                key: "CONCUR_CLIENT_SECRET_SOURCE",
                value: raw_source.clone(),
                reason,
            })?;
        let in_lambda = in_deployed_lambda(env);
        if secret_source.is_local_only() && !local_secrets_allowed(env)? {
            return Err(ConfigError::Invalid {
                key: "CONCUR_CLIENT_SECRET_SOURCE",
                value: raw_source,
                reason: LOCAL_SOURCE_REFUSAL.into(),
            });
        }
        let max_attempts: u32 = env.parsed("CONCUR_MAX_ATTEMPTS", 4)?;
        if max_attempts == 0 {
            return Err(ConfigError::Invalid {
                key: "CONCUR_MAX_ATTEMPTS",
                value: "0".into(),
                reason: "at least one attempt is needed".into(),
            });
        }
        let call_timeout_ms: u64 = env.parsed(
            "CONCUR_CALL_TIMEOUT_MS",
            DEFAULT_CALL_TIMEOUT.as_millis() as u64,
        )?;
        if call_timeout_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "CONCUR_CALL_TIMEOUT_MS",
                value: "0".into(),
                reason: "a call needs some time to be answered".into(),
            });
        }
        Ok(Self {
            api_base,
            auth_base: base_url(env, "CONCUR_AUTH_BASE_URL")?,
            authtoken_base: base_url(env, "CONCUR_AUTHTOKEN_BASE_URL")?,
            version: env.parsed("CONCUR_API_VERSION", ApiVersion::V3_2)?,
            client_id: env.get("CONCUR_CLIENT_ID"),
            secret_source,
            call_timeout: Duration::from_millis(call_timeout_ms),
            max_attempts,
            in_deployed_lambda: in_lambda,
        })
    }

    /// Fetch the secret and build the client (once per cold start).
    pub async fn client(
        &self,
        aws: &SdkConfig,
        env: &impl Env,
    ) -> Result<ConcurClient, ConfigError> {
        let secret = self.secret_source.fetch(aws, env).await?;
        let credentials =
            credentials_from_secret(&secret, self.client_id.clone()).map_err(|message| {
                ConfigError::Secret {
                    source_name: self.secret_source.name(),
                    message,
                }
            })?;
        let mut config = ConcurConfig::new(
            self.api_base.clone(),
            credentials.client_id,
            credentials.client_secret,
        );
        if let Some(base) = &self.auth_base {
            config.token_base = base.clone();
        }
        if let Some(base) = &self.authtoken_base {
            config.authtoken_base = base.clone();
        }
        config.version = self.version;
        config.call_timeout = self.call_timeout;
        config.retry = RetryPolicy {
            max_attempts: self.max_attempts,
            ..RetryPolicy::default()
        };
        if self.in_deployed_lambda && self.api_base.is_loopback() {
            tracing::warn!("CONCUR_API_BASE_URL is a loopback address in a deployed function");
        }
        let provider = SourceSecretProvider {
            source: self.secret_source.clone(),
            aws: aws.clone(),
            configured_id: self.client_id.clone(),
        };
        ConcurClient::new(config)
            .map(|client| client.with_secret_provider(std::sync::Arc::new(provider)))
            .map_err(|e| ConfigError::Secret {
                source_name: "HTTP client".into(),
                message: e.to_string(),
            })
    }
}

/// Fetches the client credentials again from their source (`env:` sources read the
/// process environment).
struct SourceSecretProvider {
    source: SecretSource,
    aws: SdkConfig,
    configured_id: Option<String>,
}

impl crate::concur::SecretProvider for SourceSecretProvider {
    fn fetch(&self) -> crate::concur::SecretFuture<'_> {
        Box::pin(async move {
            let secret = self
                .source
                .fetch(&self.aws, &ProcessEnv)
                .await
                .map_err(|e| e.to_string())?;
            let credentials = credentials_from_secret(&secret, self.configured_id.clone())?;
            Ok((credentials.client_id, credentials.client_secret))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn secret_sources_parse_with_clear_errors() {
        assert_eq!(
            "secretsmanager:arn:aws:secretsmanager:eu-west-1:1:secret:x".parse(),
            Ok(SecretSource::SecretsManager(
                "arn:aws:secretsmanager:eu-west-1:1:secret:x".into()
            ))
        );
        assert_eq!(
            "ssm:/triplink/secret".parse(),
            Ok(SecretSource::Ssm("/triplink/secret".into()))
        );
        assert_eq!("env:X".parse(), Ok(SecretSource::Env("X".into())));
        assert!("vault:x"
            .parse::<SecretSource>()
            .unwrap_err()
            .contains("unknown source"));
        assert!("env:".parse::<SecretSource>().is_err());
        assert!("plain".parse::<SecretSource>().is_err());
    }

    #[test]
    fn settings_need_a_base_url_and_a_secret_source() {
        let err = ConcurSettings::from_env(&env(&[])).unwrap_err();
        assert!(err.to_string().contains("CONCUR_API_BASE_URL"));
        let err =
            ConcurSettings::from_env(&env(&[("CONCUR_API_BASE_URL", "https://evil.example.com")]))
                .unwrap_err();
        assert!(
            err.to_string().contains("outside Concur's domains"),
            "{err}"
        );
        let settings = ConcurSettings::from_env(&env(&[
            ("CONCUR_API_BASE_URL", "https://us.api.concursolutions.com"),
            ("CONCUR_CLIENT_SECRET_SOURCE", "ssm:/x"),
            ("CONCUR_API_VERSION", "3.1"),
        ]))
        .unwrap();
        assert_eq!(settings.version, ApiVersion::V3_1);
        assert_eq!(settings.max_attempts, 4);
        assert_eq!(settings.call_timeout, Duration::from_secs(60));
    }

    #[test]
    fn the_functions_refuse_legacy_versions_with_the_reason() {
        for legacy in ["3.0", "3.1", "v3.1"] {
            let vars = env(&[
                ("CONCUR_API_BASE_URL", "https://us.api.concursolutions.com"),
                ("CONCUR_CLIENT_SECRET_SOURCE", "ssm:/x"),
                ("CONCUR_API_VERSION", legacy),
            ]);
            // The library still reads them (the client speaks every version) ...
            assert!(ConcurSettings::from_env(&vars).is_ok());
            // ... the functions do not run on them.
            let err = ConcurSettings::for_functions(&vars).unwrap_err();
            assert_eq!(err.error_type(), "Config.Invalid");
            let message = err.to_string();
            assert!(
                message.starts_with(&format!("CONCUR_API_VERSION={legacy:?} is invalid")),
                "{message}"
            );
            assert!(
                message.contains("no userId") && message.contains("CONCUR_API_VERSION=3.2"),
                "{message}"
            );
        }
        for fine in [None, Some("3.2")] {
            let mut pairs = vec![
                ("CONCUR_API_BASE_URL", "https://us.api.concursolutions.com"),
                ("CONCUR_CLIENT_SECRET_SOURCE", "ssm:/x"),
            ];
            if let Some(version) = fine {
                pairs.push(("CONCUR_API_VERSION", version));
            }
            let settings = ConcurSettings::for_functions(&env(&pairs)).unwrap();
            assert_eq!(settings.version, ApiVersion::V3_2);
        }
        assert_eq!(
            ConcurSettings::for_functions(&env(&[]))
                .unwrap_err()
                .error_type(),
            "Config.Missing"
        );
    }

    #[test]
    fn plain_environment_secrets_are_refused_in_a_deployed_lambda() {
        let base = [
            ("CONCUR_API_BASE_URL", "https://us.api.concursolutions.com"),
            ("CONCUR_CLIENT_SECRET_SOURCE", "env:CONCUR_CLIENT_SECRET"),
            ("AWS_LAMBDA_FUNCTION_NAME", "poller"),
        ];
        let err = ConcurSettings::from_env(&env(&base)).unwrap_err();
        assert_eq!(err.error_type(), "Config.Invalid");
        let message = err.to_string();
        assert!(message.contains("local runs only"), "{message}");
        assert!(
            message.contains("TRIPLINK_ALLOW_ENV_SECRETS=1"),
            "{message}"
        );
        // `sam local` alone is no longer enough: the override is explicit.
        let mut sam_local = base.to_vec();
        sam_local.push(("AWS_SAM_LOCAL", "true"));
        assert!(ConcurSettings::from_env(&env(&sam_local)).is_err());
        for refused in ["0", "false", " "] {
            let mut vars = base.to_vec();
            vars.push((ALLOW_ENV_SECRETS, refused));
            assert!(
                ConcurSettings::from_env(&env(&vars)).is_err(),
                "{refused:?}"
            );
        }
        for allowed in ["1", "true", " 1 "] {
            let mut vars = base.to_vec();
            vars.push((ALLOW_ENV_SECRETS, allowed));
            assert!(ConcurSettings::from_env(&env(&vars)).is_ok(), "{allowed:?}");
        }
        // A value that is neither says which variable is wrong.
        let mut vars = base.to_vec();
        vars.push((ALLOW_ENV_SECRETS, "yes"));
        let err = ConcurSettings::from_env(&env(&vars)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(r#"TRIPLINK_ALLOW_ENV_SECRETS="yes" is invalid"#),
            "{err}"
        );
        // Outside a Lambda execution environment (tests, the CLI) nothing is needed.
        let outside: Vec<_> = base
            .iter()
            .copied()
            .filter(|(k, _)| *k != "AWS_LAMBDA_FUNCTION_NAME")
            .collect();
        assert!(ConcurSettings::from_env(&env(&outside)).is_ok());
        // Secret-backed sources are never affected.
        let mut cloud = base.to_vec();
        cloud[1] = ("CONCUR_CLIENT_SECRET_SOURCE", "secretsmanager:concur");
        assert!(ConcurSettings::from_env(&env(&cloud)).is_ok());
    }

    #[test]
    fn secret_source_checks_follow_the_same_override() {
        let file = SecretSource::File("/tmp/secret".into());
        let vault = SecretSource::Ssm("/triplink/x".into());
        let lambda = env(&[("AWS_LAMBDA_FUNCTION_NAME", "worker")]);
        let err = file.check(&lambda).unwrap_err();
        assert_eq!(err.error_type(), "Config.SecretUnavailable");
        assert!(
            err.to_string().contains("TRIPLINK_ALLOW_ENV_SECRETS"),
            "{err}"
        );
        assert!(vault.check(&lambda).is_ok());
        let local = env(&[
            ("AWS_LAMBDA_FUNCTION_NAME", "worker"),
            (ALLOW_ENV_SECRETS, "1"),
        ]);
        assert!(file.check(&local).is_ok());
        assert!(file.check(&env(&[])).is_ok());
    }

    #[test]
    fn the_sdk_config_carries_explicit_timeouts_and_retries() {
        use aws_config::retry::RetryMode;
        let aws = lambda_sdk_config(&env(&[("AWS_REGION", "eu-west-1")])).unwrap();
        let timeouts = aws.timeout_config().expect("timeouts are set");
        assert_eq!(timeouts.connect_timeout(), Some(Duration::from_secs(1)));
        assert_eq!(
            timeouts.operation_attempt_timeout(),
            Some(Duration::from_secs(2))
        );
        assert_eq!(timeouts.operation_timeout(), Some(Duration::from_secs(5)));
        let retry = aws.retry_config().expect("retries are set");
        assert_eq!(retry.mode(), RetryMode::Standard);
        assert_eq!(retry.max_attempts(), 3);
        assert_eq!(retry.max_backoff(), Duration::from_secs(1));
        // A retry is possible within the operation's budget, and the whole call ends
        // within the poller's default deadline margin (POLL_DEADLINE_MARGIN_MS, 5 s).
        assert!(SDK_ATTEMPT_TIMEOUT * 2 + SDK_MAX_BACKOFF <= SDK_OPERATION_TIMEOUT);
        assert!(SDK_CONNECT_TIMEOUT < SDK_ATTEMPT_TIMEOUT);
        assert!(SDK_OPERATION_TIMEOUT <= Duration::from_millis(5000));
        // A local endpoint changes nothing of that.
        let local = lambda_sdk_config(&env(&[
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
        ]))
        .unwrap();
        assert_eq!(local.timeout_config(), aws.timeout_config());
        assert_eq!(local.endpoint_url(), Some("http://127.0.0.1:5000"));
        assert!(matches!(
            lambda_sdk_config(&env(&[])),
            Err(ConfigError::Missing("AWS_REGION"))
        ));
    }

    #[test]
    fn secrets_are_json_or_bare() {
        let json = SecretString::from(r#"{"client_id":"id-1","client_secret":"s-1"}"#);
        let creds = credentials_from_secret(&json, Some("ignored".into())).unwrap();
        assert_eq!(creds.client_id, "id-1");
        assert_eq!(creds.client_secret.expose_secret(), "s-1");
        let bare = SecretString::from(" s-2\n");
        let creds = credentials_from_secret(&bare, Some("id-2".into())).unwrap();
        assert_eq!(
            (
                creds.client_id.as_str(),
                creds.client_secret.expose_secret()
            ),
            ("id-2", "s-2")
        );
        assert!(credentials_from_secret(&bare, None)
            .unwrap_err()
            .contains("CONCUR_CLIENT_ID"));
        assert!(credentials_from_secret(&SecretString::from("{\"x\":1}"), None).is_err());
        let shown = format!("{:?}", credentials_from_secret(&json, None).unwrap());
        assert!(!shown.contains("s-1"), "{shown}");
    }

    #[tokio::test]
    async fn a_file_secret_builds_a_client() {
        let path = std::env::temp_dir().join(format!("triplink-secret-{}", std::process::id()));
        std::fs::write(&path, r#"{"client_id":"cid","client_secret":"from-file"}"#).unwrap();
        let vars = env(&[
            ("CONCUR_API_BASE_URL", "http://127.0.0.1:9"),
            (
                "CONCUR_CLIENT_SECRET_SOURCE",
                &format!("file:{}", path.display()),
            ),
        ]);
        let settings = ConcurSettings::from_env(&vars).unwrap();
        let aws = SdkConfig::builder().build();
        let client = settings.client(&aws, &vars).await.unwrap();
        assert_eq!(client.config().client_id, "cid");
        assert_eq!(client.config().client_secret.expose_secret(), "from-file");
        std::fs::remove_file(path).ok();
    }
}
