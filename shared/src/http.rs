//! One HTTP/TLS stack for every outbound call of the functions: reqwest (hyper 1, HTTP/1.1)
//! over rustls with the `ring` provider and the Mozilla web-PKI roots compiled in.
//!
//! The Concur client and the member service use [`client_builder`]; the AWS SDK uses the
//! same stack through [`SdkHttpClient`], an adapter from the SDK's `HttpClient` trait to
//! reqwest. No platform certificate store is read (Lambda has none worth loading), nothing
//! here touches the network, and building a client costs microseconds: it is done once per
//! cold start and reused by every invocation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;

/// The TLS configuration of every client: TLS 1.2 and 1.3 with `ring`, the compiled-in
/// web-PKI roots, ALPN `http/1.1`.
pub fn tls_config() -> Result<rustls::ClientConfig, String> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS configuration: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Why [`read_body`] gave up.
#[derive(Debug)]
pub enum BodyError {
    /// The body grew past the cap: the rest was not read.
    TooLarge { cap: usize },
    /// The connection broke or timed out while reading.
    Transport(reqwest::Error),
}

/// Read a response body, at most `cap` bytes: a longer body is an error once the cap is
/// passed, never read whole (every answer read by the connector goes through this).
pub async fn read_body(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|length| length > cap as u64)
    {
        return Err(BodyError::TooLarge { cap });
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if bytes.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge { cap });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// A reqwest client builder on the shared TLS configuration, with the connector's user
/// agent. Callers add their timeouts and policies.
pub fn client_builder() -> Result<reqwest::ClientBuilder, String> {
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config()?)
        .user_agent(concat!("triplink-connector/", env!("CARGO_PKG_VERSION"))))
}

/// The HTTP client of the functions' AWS SDK configuration
/// ([`crate::config::lambda_sdk_config`]): [`SdkHttpClient`], reqwest on the shared stack.
#[cfg(not(feature = "sdk-smithy-client"))]
pub fn sdk_http_client() -> SharedHttpClient {
    SdkHttpClient::shared()
}

/// The HTTP client of the functions' AWS SDK configuration, with the off-by-default
/// `sdk-smithy-client` feature (measurement only, bench/README.md): the SDK's own
/// `aws-smithy-http-client` (hyper 1, rustls with `ring`) instead of reqwest. Its trust
/// store takes only the platform's roots or PEM: here no platform roots, and the Mozilla
/// roots of `webpki-root-certs` as a PEM bundle written by `build.rs`. The client parses
/// them when the SDK first asks it for a connector (the first AWS call), not here.
#[cfg(feature = "sdk-smithy-client")]
pub fn sdk_http_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls::TrustStore;
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider, TlsContext};

    let trust_store = TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(ROOTS_PEM);
    let builder =
        aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring));
    match TlsContext::builder().with_trust_store(trust_store).build() {
        Ok(context) => builder.tls_context(context).build_https(),
        // Not reached (building a context only stores its parts); the default context
        // would read the platform's roots, so fail every call instead.
        Err(error) => {
            let reason = format!("TLS context: {error}");
            aws_smithy_runtime_api::client::http::http_client_fn(move |_, _| {
                SharedHttpConnector::new(FailingConnector(reason.clone()))
            })
        }
    }
}

/// The Mozilla roots of `webpki-root-certs` as one PEM bundle (`build.rs`).
#[cfg(feature = "sdk-smithy-client")]
static ROOTS_PEM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/webpki-root-certs.pem"));

#[cfg(feature = "sdk-smithy-client")]
#[derive(Debug)]
struct FailingConnector(String);

#[cfg(feature = "sdk-smithy-client")]
impl HttpConnector for FailingConnector {
    fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
        HttpConnectorFuture::ready(Err(ConnectorError::other(self.0.clone().into(), None)))
    }
}

/// The AWS SDK's HTTP client on the shared stack. One reqwest client (one connection
/// pool) per distinct connect/read timeout pair the SDK asks for; in practice one.
#[derive(Debug, Clone, Default)]
pub struct SdkHttpClient {
    connectors: Arc<Mutex<HashMap<TimeoutKey, SharedHttpConnector>>>,
}

type TimeoutKey = (Option<Duration>, Option<Duration>);

impl SdkHttpClient {
    pub fn new() -> Self {
        Self::default()
    }

    /// As the SDK configuration takes it.
    pub fn shared() -> SharedHttpClient {
        SharedHttpClient::new(Self::new())
    }
}

impl HttpClient for SdkHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let key = (settings.connect_timeout(), settings.read_timeout());
        let mut connectors = self
            .connectors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        connectors
            .entry(key)
            .or_insert_with(|| SharedHttpConnector::new(ReqwestConnector::new(key)))
            .clone()
    }
}

/// One reqwest client serving the SDK's requests. A client that could not be built (a
/// TLS configuration error) fails every call with the reason.
#[derive(Debug)]
struct ReqwestConnector {
    client: Result<reqwest::Client, String>,
}

impl ReqwestConnector {
    fn new((connect_timeout, read_timeout): TimeoutKey) -> Self {
        let client = client_builder().and_then(|mut builder| {
            builder = builder.redirect(reqwest::redirect::Policy::none());
            if let Some(timeout) = connect_timeout {
                builder = builder.connect_timeout(timeout);
            }
            if let Some(timeout) = read_timeout {
                builder = builder.read_timeout(timeout);
            }
            builder.build().map_err(|e| format!("HTTP client: {e}"))
        });
        Self { client }
    }
}

impl HttpConnector for ReqwestConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = match &self.client {
            Ok(client) => client.clone(),
            Err(reason) => {
                return HttpConnectorFuture::ready(Err(ConnectorError::other(
                    reason.clone().into(),
                    None,
                )))
            }
        };
        HttpConnectorFuture::new(async move {
            let request = to_reqwest(request)?;
            let response = client.execute(request).await.map_err(connector_error)?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await.map_err(connector_error)?;
            let mut out = http::Response::new(SdkBody::from(body));
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            HttpResponse::try_from(out).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// The SDK's request as reqwest's. The services the connector calls (DynamoDB, KMS,
/// Secrets Manager, SSM, SQS) send in-memory bodies; a streaming body is refused.
fn to_reqwest(request: HttpRequest) -> Result<reqwest::Request, ConnectorError> {
    let request = request
        .try_into_http1x()
        .map_err(|e| ConnectorError::user(e.into()))?;
    let (parts, body) = request.into_parts();
    let body = body
        .bytes()
        .map(<[u8]>::to_vec)
        .ok_or_else(|| ConnectorError::user("streaming request bodies are not supported".into()))?;
    reqwest::Request::try_from(http::Request::from_parts(parts, body))
        .map_err(|e| ConnectorError::user(e.into()))
}

/// reqwest's error in the SDK's terms: timeouts and I/O (connection refused or reset, a
/// broken exchange) are transient and retried by the SDK's retry strategy.
fn connector_error(error: reqwest::Error) -> ConnectorError {
    if error.is_timeout() {
        ConnectorError::timeout(error.into())
    } else if error.is_connect() || error.is_request() || error.is_body() {
        ConnectorError::io(error.into())
    } else if error.is_builder() {
        ConnectorError::user(error.into())
    } else {
        ConnectorError::other(error.into(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_config_has_the_compiled_in_roots_and_http1_alpn() {
        let config = tls_config().unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(!webpki_roots::TLS_SERVER_ROOTS.is_empty());
        client_builder().unwrap().build().unwrap();
    }

    /// The PEM bundle of the `sdk-smithy-client` variant: every block is a certificate
    /// rustls takes as a trust anchor, as the SDK's client will.
    #[cfg(feature = "sdk-smithy-client")]
    #[test]
    fn the_smithy_client_trusts_the_pem_roots() {
        use base64::Engine;
        let pem = std::str::from_utf8(ROOTS_PEM).unwrap();
        let ders: Vec<rustls::pki_types::CertificateDer<'static>> = pem
            .split("-----BEGIN CERTIFICATE-----")
            .skip(1)
            .map(|block| {
                let body: String = block
                    .split("-----END CERTIFICATE-----")
                    .next()
                    .unwrap()
                    .split_whitespace()
                    .collect();
                base64::engine::general_purpose::STANDARD
                    .decode(body)
                    .unwrap()
                    .into()
            })
            .collect();
        assert!(ders.len() >= 100, "{} roots", ders.len());
        let mut roots = rustls::RootCertStore::empty();
        assert_eq!(
            roots.add_parsable_certificates(ders.clone()),
            (ders.len(), 0)
        );
        let _ = sdk_http_client();
    }
}
