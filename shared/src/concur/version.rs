//! The Connection Requests API version: 3.2 by default, 3.1 and 3.0 behind a switch.
//! Owns what differs between versions: the path, the status body, the offset form.

use std::fmt;
use std::str::FromStr;

use crate::model::{json, xml, ConnectionStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiVersion {
    /// v3.0 (deprecated): PascalCase, XML status bodies, `DiscountCode` and `Message`.
    V3_0,
    /// v3.1 (deprecated): PascalCase JSON with `EmailAddresses`.
    V3_1,
    /// v3.2: camelCase JSON, `userId`, integer offsets.
    #[default]
    V3_2,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown Connection Requests API version {0:?} (expected 3.0, 3.1 or 3.2)")]
pub struct UnknownVersion(pub String);

impl ApiVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V3_0 => "3.0",
            Self::V3_1 => "3.1",
            Self::V3_2 => "3.2",
        }
    }

    /// The collection path, with its trailing slash as the page writes it.
    pub fn collection_path(self) -> String {
        format!("/api/v{}/common/connectionrequests/", self.as_str())
    }

    /// v3.2 documents `offset` as an integer; older versions used an opaque string.
    pub fn integer_offsets(self) -> bool {
        self == Self::V3_2
    }

    /// The body of `PUT .../{id}` and its content type, as each version's page describes.
    pub fn status_body(self, id: &str, status: ConnectionStatus) -> (&'static str, String) {
        match self {
            Self::V3_2 => ("application/json", json::status_body_v32(status)),
            Self::V3_1 => ("application/json", json::status_body_v31(status)),
            Self::V3_0 => ("application/xml", xml::status_body_v30(id, status)),
        }
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ApiVersion {
    type Err = UnknownVersion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().trim_start_matches(['v', 'V']) {
            "3.0" => Ok(Self::V3_0),
            "3.1" => Ok(Self::V3_1),
            "3.2" => Ok(Self::V3_2),
            _ => Err(UnknownVersion(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_name_their_paths() {
        assert_eq!("3.2".parse(), Ok(ApiVersion::V3_2));
        assert_eq!("v3.1".parse(), Ok(ApiVersion::V3_1));
        assert_eq!(" 3.0 ".parse(), Ok(ApiVersion::V3_0));
        assert!("3.3".parse::<ApiVersion>().is_err());
        assert_eq!(ApiVersion::default(), ApiVersion::V3_2);
        assert_eq!(
            ApiVersion::V3_2.collection_path(),
            "/api/v3.2/common/connectionrequests/"
        );
    }

    #[test]
    fn status_bodies_follow_each_page() {
        let s = ConnectionStatus::AccountMismatch;
        assert_eq!(
            ApiVersion::V3_2.status_body("x", s),
            ("application/json", r#"{"status":"CREU2"}"#.to_owned())
        );
        assert_eq!(
            ApiVersion::V3_1.status_body("x", s),
            ("application/json", r#"{"Status":"CREU2"}"#.to_owned())
        );
        let (ct, body) = ApiVersion::V3_0.status_body("x", s);
        assert_eq!(ct, "application/xml");
        assert!(body.contains("<Status>CREU2</Status>") && body.contains("<ID>x</ID>"));
    }
}
