//! The AWS configuration: the default chain, or a local endpoint.

use aws_config::meta::region::RegionProviderChain;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use url::{Host, Url};

use crate::CliError;

/// The region used with an endpoint when nothing else names one.
pub const LOCAL_DEFAULT_REGION: &str = "us-east-1";

/// Whether `url` points at this machine (`localhost`, 127.0.0.0/8, `::1`).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Whether the user configured any credentials the default chain would find without
/// asking the network (environment, profile, web identity, container, shared files).
fn credentials_configured() -> bool {
    let set = |key: &str| std::env::var(key).is_ok_and(|v| !v.trim().is_empty());
    if [
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_SHARED_CREDENTIALS_FILE",
    ]
    .iter()
    .any(|key| set(key))
    {
        return true;
    }
    std::env::var_os("HOME")
        .map(std::path::PathBuf::from)
        .is_some_and(|home| home.join(".aws").join("credentials").exists())
}

/// The SDK configuration: the default chain; `endpoint` redirects every service to one
/// URL (and makes `us-east-1` the fallback region); a loopback endpoint without
/// configured credentials gets dummy ones, so local use just works.
pub async fn sdk_config(
    endpoint: Option<&str>,
    region: Option<&str>,
) -> Result<SdkConfig, CliError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(triplink_shared::http::SdkHttpClient::shared());
    let endpoint = endpoint.map(str::trim).filter(|e| !e.is_empty());
    if let Some(endpoint) = endpoint {
        let url = Url::parse(endpoint).map_err(|e| {
            CliError(format!(
                "--endpoint-url {endpoint:?} is not a URL ({e}); expected e.g. http://127.0.0.1:5000"
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(CliError(format!(
                "--endpoint-url {endpoint:?} must be http:// or https://"
            )));
        }
        loader = loader.endpoint_url(endpoint);
        if is_loopback(&url) && !credentials_configured() {
            loader = loader.credentials_provider(Credentials::new(
                "test",
                "test",
                None,
                None,
                "triplink-cli-local",
            ));
        }
    }
    let chain = match region.map(str::trim).filter(|r| !r.is_empty()) {
        Some(region) => RegionProviderChain::first_try(Region::new(region.to_owned())),
        None => default_region_chain(),
    };
    let chain = if endpoint.is_some() {
        chain.or_else(LOCAL_DEFAULT_REGION)
    } else {
        chain
    };
    let config = loader.region(chain).load().await;
    if config.region().is_none() {
        return Err(CliError::new(
            "no AWS region configured: pass --region or set AWS_REGION",
        ));
    }
    Ok(config)
}

/// The SDK's default region chain (environment, profile, IMDS) with IMDS on the shared
/// HTTP client: without the SDK's own client (no default features), IMDS needs it given.
fn default_region_chain() -> RegionProviderChain {
    let provider_config = aws_config::provider_config::ProviderConfig::default()
        .with_http_client(triplink_shared::http::SdkHttpClient::new());
    RegionProviderChain::first_try(
        aws_config::environment::EnvironmentVariableRegionProvider::new(),
    )
    .or_else(
        aws_config::profile::ProfileFileRegionProvider::builder()
            .configure(&provider_config)
            .build(),
    )
    .or_else(
        aws_config::imds::region::ImdsRegionProvider::builder()
            .configure(&provider_config)
            .build(),
    )
}

/// An AWS SDK error in one short line: `Code: message` for a service error; the error
/// and its causes for a connection, timeout or response failure (never the raw response).
pub fn describe<E, R>(error: &aws_sdk_dynamodb::error::SdkError<E, R>) -> String
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_dynamodb::error::SdkError;
    if let SdkError::ServiceError(service) = error {
        let err = service.err();
        let text = match (err.code(), err.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_owned(),
            _ => err.to_string(),
        };
        return hint(text);
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    one_line(&text)
}

fn hint(text: String) -> String {
    if text.starts_with("ResourceNotFoundException") {
        format!("{text} (does it exist in this account, region and endpoint?)")
    } else {
        text
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A message that may embed an SDK error's `DisplayErrorContext` (as the shared crate's
/// store errors do), cut before the debug dump of the raw response, on one line.
pub fn concise(message: &str) -> String {
    let mut cut = message.len();
    for marker in [
        " (ServiceError(",
        " (DispatchFailure(",
        " (TimeoutError(",
        " (ResponseError(",
        " (ConstructionFailure(",
    ] {
        if let Some(at) = message.find(marker) {
            cut = cut.min(at);
        }
    }
    let text = one_line(&message[..cut]);
    if text.contains("ResourceNotFoundException") && !text.contains("does it exist") {
        format!("{text} (does it exist in this account, region and endpoint?)")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_endpoints() {
        for (url, expected) in [
            ("http://127.0.0.1:5000", true),
            ("http://localhost:8000", true),
            ("http://[::1]:8000", true),
            ("https://dynamodb.us-east-1.amazonaws.com", false),
            ("http://10.0.0.1", false),
        ] {
            assert_eq!(is_loopback(&Url::parse(url).unwrap()), expected, "{url}");
        }
    }

    #[test]
    fn sdk_error_dumps_are_cut() {
        let long = "DynamoDB GetItem failed: service error: X: y (ServiceError(ServiceError { raw: Response { headers: {} } }))";
        assert_eq!(
            concise(long),
            "DynamoDB GetItem failed: service error: X: y"
        );
        assert_eq!(concise("two\nlines"), "two lines");
    }
}
