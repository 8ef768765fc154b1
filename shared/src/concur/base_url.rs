//! Base URLs the client may call: Concur's own domains over HTTPS, or loopback for local
//! runs. Everything else — another domain, plain HTTP to a remote host, a URL with a
//! path, query or credentials — is refused with a clear error.

use std::fmt;
use std::net::IpAddr;

use url::{Host, Url};

/// The Global Landing Zone base URI: the password grant with `credtype=authtoken` goes here.
pub const GLZ_BASE_URL: &str = "https://glz.api.concursolutions.com";

/// The DNS domain every Concur base URI and geolocation lives in (`base-uris.md`).
pub const CONCUR_DOMAIN: &str = "concursolutions.com";

/// An origin the client is allowed to call.
#[derive(Clone, PartialEq, Eq)]
pub struct BaseUrl(Url);

/// Why a base URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BaseUrlError {
    #[error("{url:?} is not a URL: {reason}")]
    Parse { url: String, reason: String },
    #[error("{url:?} must use https (plain http is allowed for loopback addresses only)")]
    NotHttps { url: String },
    #[error(
        "{url:?} is outside Concur's domains (*.{CONCUR_DOMAIN}) and is not a loopback address"
    )]
    ForeignHost { url: String },
    #[error("{url:?} must be an origin only (scheme, host, port): no path, query, fragment or credentials")]
    NotAnOrigin { url: String },
}

fn is_loopback(host: Host<&str>) -> bool {
    match host {
        Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => IpAddr::V4(ip).is_loopback(),
        Host::Ipv6(ip) => IpAddr::V6(ip).is_loopback(),
    }
}

fn is_concur(host: Host<&str>) -> bool {
    match host {
        Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == CONCUR_DOMAIN || name.ends_with(&format!(".{CONCUR_DOMAIN}"))
        }
        _ => false,
    }
}

impl BaseUrl {
    /// Accept `https://<anything>.concursolutions.com[:port]`, or `http(s)://` a loopback
    /// address (127.0.0.0/8, ::1, localhost). A trailing `/` is allowed.
    pub fn parse(raw: &str) -> Result<Self, BaseUrlError> {
        let trimmed = raw.trim();
        let url = Url::parse(trimmed).map_err(|e| BaseUrlError::Parse {
            url: raw.to_owned(),
            reason: e.to_string(),
        })?;
        let host = url.host().ok_or_else(|| BaseUrlError::Parse {
            url: raw.to_owned(),
            reason: "no host".into(),
        })?;
        if !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
            || !matches!(url.path(), "" | "/")
        {
            return Err(BaseUrlError::NotAnOrigin {
                url: raw.to_owned(),
            });
        }
        let loopback = is_loopback(host.clone());
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => {
                return Err(BaseUrlError::NotHttps {
                    url: raw.to_owned(),
                })
            }
            other => {
                return Err(BaseUrlError::Parse {
                    url: raw.to_owned(),
                    reason: format!("unsupported scheme {other:?}"),
                })
            }
        }
        if !loopback && !is_concur(host) {
            return Err(BaseUrlError::ForeignHost {
                url: raw.to_owned(),
            });
        }
        Ok(Self(url))
    }

    /// The Global Landing Zone.
    pub fn glz() -> Result<Self, BaseUrlError> {
        Self::parse(GLZ_BASE_URL)
    }

    /// True for local runs against a loopback address.
    pub fn is_loopback(&self) -> bool {
        self.0.host().is_some_and(is_loopback)
    }

    /// The host name (no personal data: safe to log).
    pub fn host(&self) -> String {
        self.0.host_str().unwrap_or_default().to_owned()
    }

    /// This origin with `path` (absolute, e.g. `/oauth2/v0/token`).
    pub fn join(&self, path: &str) -> Url {
        let mut url = self.0.clone();
        url.set_path(path);
        url
    }

    /// `url` with this origin (scheme, host, port) and its own path and query.
    pub fn rebase(&self, url: &Url) -> Url {
        let mut rebased = self.0.clone();
        rebased.set_path(url.path());
        rebased.set_query(url.query());
        rebased
    }

    /// The origin as text, without a trailing slash.
    pub fn as_str(&self) -> &str {
        self.0.as_str().trim_end_matches('/')
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BaseUrl({})", self.as_str())
    }
}

impl std::str::FromStr for BaseUrl {
    type Err = BaseUrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concur_domains_over_https_are_accepted() {
        for ok in [
            "https://us.api.concursolutions.com",
            "https://www-us2.api.concursolutions.com/",
            "https://glz.api.concursolutions.com",
            "https://eu1imp.concursolutions.com",
            "https://US.API.CONCURSOLUTIONS.COM",
        ] {
            let base = BaseUrl::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert!(!base.is_loopback());
            assert!(!base.as_str().ends_with('/'));
        }
        assert_eq!(
            BaseUrl::glz().unwrap().host(),
            "glz.api.concursolutions.com"
        );
    }

    #[test]
    fn loopback_is_accepted_over_http() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.9.9.9",
            "http://[::1]:9000/",
            "http://localhost:1234",
        ] {
            assert!(BaseUrl::parse(ok).unwrap().is_loopback(), "{ok}");
        }
    }

    #[test]
    fn everything_else_is_refused_with_the_reason() {
        let cases = [
            ("http://us.api.concursolutions.com", "must use https"),
            ("https://evil.example.com", "outside Concur's domains"),
            (
                "https://concursolutions.com.evil.io",
                "outside Concur's domains",
            ),
            ("https://notconcursolutions.com", "outside Concur's domains"),
            ("http://10.0.0.1", "must use https"),
            ("https://10.0.0.1", "outside Concur's domains"),
            ("https://us.api.concursolutions.com/api", "origin only"),
            ("https://us.api.concursolutions.com?x=1", "origin only"),
            ("https://user:pw@us.api.concursolutions.com", "origin only"),
            ("ftp://127.0.0.1", "unsupported scheme"),
            ("not a url", "is not a URL"),
        ];
        for (raw, why) in cases {
            let err = BaseUrl::parse(raw).unwrap_err().to_string();
            assert!(err.contains(why), "{raw}: {err}");
        }
    }

    #[test]
    fn rebase_keeps_path_and_query() {
        let base = BaseUrl::parse("https://emea.api.concursolutions.com").unwrap();
        let url =
            Url::parse("http://127.0.0.1:9/api/v3.2/common/connectionrequests/?limit=10").unwrap();
        assert_eq!(
            base.rebase(&url).as_str(),
            "https://emea.api.concursolutions.com/api/v3.2/common/connectionrequests/?limit=10"
        );
    }

    #[test]
    fn join_sets_the_path() {
        let base = BaseUrl::parse("http://127.0.0.1:9/").unwrap();
        assert_eq!(
            base.join("/oauth2/v0/token").as_str(),
            "http://127.0.0.1:9/oauth2/v0/token"
        );
    }
}
