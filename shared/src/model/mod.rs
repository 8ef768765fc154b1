//! The connector's one model of a Concur connection request, and the wire formats at the
//! edge ([`json`] for v3.1/v3.2 JSON and v3.0 JSON, [`xml`] for the XML forms).
//!
//! Wire values become the model through [`ConnectionRequest::from_wire`], which is where
//! every rule about incoming values lives: blank strings are absent values, `ID` is
//! required, `status` must be a known code, `lastModified` carries no zone and is UTC.

pub mod json;
pub mod status;
pub mod xml;

use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use crate::privacy;
pub use status::{ConnectionStatus, UnknownStatus};

/// A connection request as the connector works with it, whatever version it came from.
#[derive(Clone)]
pub struct ConnectionRequest {
    /// Concur's `ID`: the only identifier the connector uses (never one parsed from `URI`).
    pub id: String,
    /// Concur's `URI`, kept for reference only; it may name another host.
    pub uri: Option<String>,
    /// The Concur user id (`userId`, v3.2 only).
    pub user_id: Option<String>,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub last_name: Option<String>,
    pub loyalty_number: Option<String>,
    pub status: Option<ConnectionStatus>,
    /// The request token to exchange for the user's tokens. Secret: never printed.
    pub request_token: Option<SecretString>,
    /// `lastModified`, read as UTC.
    pub last_modified: Option<DateTime<Utc>>,
    /// Verified e-mail addresses, `email1`..`email5` in order, absent ones left out.
    pub emails: Vec<String>,
    /// v3.0 only, deprecated by Concur.
    pub discount_code: Option<String>,
    /// v3.0 only, unused by Concur.
    pub message: Option<String>,
}

/// One page of the pending queue as Concur returned it.
#[derive(Debug, Clone)]
pub struct ConnectionRequestPage {
    pub items: Vec<ConnectionRequest>,
    /// The raw `NextPage` value: `None` when the queue is drained.
    pub next_page: Option<String>,
    /// Items that could not be read as requests: kept aside, never acted on.
    pub quarantined: Vec<Quarantined>,
    /// Items read with a field that had to be ignored (an unknown `status`, an
    /// unreadable `lastModified`): neither is needed to act on the request.
    pub degraded: Vec<Degraded>,
}

/// A page item that could not be read as a connection request. No input is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// Its `ID`, when it has a readable one.
    pub id: Option<String>,
    /// A stable key for it: the `ID`, or `unidentified:<fingerprint of the item>`.
    pub key: String,
    /// Why (a fixed code): `malformed_item`, `missing_id`.
    pub reason: &'static str,
}

/// A request read with a field ignored. No input is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Degraded {
    pub id: String,
    /// The fields that were ignored: `status`, `lastModified`.
    pub ignored: Vec<&'static str>,
}

/// A payload that could not be read as what it should be. Neither its `Display` nor its
/// `Debug` quotes the input (see [`crate::privacy::without_values`]).
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("malformed XML: {0}")]
    Xml(String),
    #[error("unexpected XML document root {}", root_name(.0))]
    UnexpectedRoot(String),
    #[error("connection request without an ID")]
    MissingId,
    #[error("connection request {id}: {source}")]
    Status { id: String, source: UnknownStatus },
    #[error(
        "connection request {id}: lastModified {} is not a date and time",
        crate::privacy::code(value)
    )]
    LastModified { id: String, value: String },
}

/// A document root's name when it is one the API or a web server writes; any other
/// name is input the connector does not know and is withheld.
fn root_name(name: &str) -> String {
    const KNOWN: [&str; 6] = [
        "ConnectionRequests",
        "ConnectionRequest",
        "Error",
        "Errors",
        "html",
        "HTML",
    ];
    if KNOWN.contains(&name) {
        format!("<{name}>")
    } else {
        format!("(a name of {} characters)", name.chars().count())
    }
}

impl fmt::Debug for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ModelError")
            .field(&format_args!("{self}"))
            .finish()
    }
}

/// The fields of a connection request as they appear on the wire, any version. Its
/// `Debug` masks the personal data and withholds the request token.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WireConnectionRequest {
    pub id: Option<String>,
    pub uri: Option<String>,
    pub user_id: Option<String>,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub last_name: Option<String>,
    pub loyalty_number: Option<String>,
    pub status: Option<String>,
    pub request_token: Option<String>,
    pub last_modified: Option<String>,
    pub emails: [Option<String>; 5],
    pub discount_code: Option<String>,
    pub message: Option<String>,
}

/// A request's first, middle and last names for `Debug`: first letters only.
fn masked_names<'a>(
    first: &'a Option<String>,
    middle: &'a Option<String>,
    last: &'a Option<String>,
) -> [privacy::Masked<'a>; 3] {
    [first, middle, last].map(|name| privacy::name(name.as_deref()))
}

impl fmt::Debug for WireConnectionRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let emails: Vec<_> = self
            .emails
            .iter()
            .map(|e| e.as_deref().map(|e| privacy::email(Some(e))))
            .collect();
        f.debug_struct("WireConnectionRequest")
            .field("id", &self.id)
            .field("uri", &self.uri)
            .field("user_id", &self.user_id)
            .field(
                "names",
                &masked_names(&self.first_name, &self.middle_name, &self.last_name),
            )
            .field(
                "loyalty_number",
                &privacy::loyalty(self.loyalty_number.as_deref()),
            )
            .field("status", &self.status.as_deref().map(privacy::code))
            .field(
                "request_token",
                &self.request_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field(
                "last_modified",
                &self.last_modified.as_deref().map(privacy::code),
            )
            .field("emails", &emails)
            .field(
                "discount_code",
                &self.discount_code.as_deref().map(privacy::code),
            )
            .field("message", &self.message.as_deref().map(privacy::free_text))
            .finish()
    }
}

/// A collection as it appears on the wire: `Items` and `NextPage`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WireCollection {
    pub items: Vec<WireConnectionRequest>,
    pub next_page: Option<String>,
    /// Items that could not even be read as wire fields.
    pub rejected: Vec<WireRejected>,
}

/// An item of a collection that could not be read as wire fields. No input is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireRejected {
    /// Its position in `Items`.
    pub index: usize,
    /// Its `ID`, when readable.
    pub id: Option<String>,
    /// A stable, non-reversible name of the item's text.
    pub fingerprint: String,
    pub reason: &'static str,
}

/// The `Error` body Concur may send, even with HTTP 200 (http-status-codes page).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WireErrorBody {
    pub message: Option<String>,
    pub server_time: Option<String>,
    pub id: Option<String>,
}

fn present(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Parse `lastModified`: the examples carry no zone (`2022-11-02T09:39:21`) and the page
/// says UTC. A value with a zone or fractional seconds is accepted too.
pub fn parse_last_modified(value: &str) -> Option<DateTime<Utc>> {
    let value = value.trim();
    if let Ok(with_zone) = DateTime::parse_from_rfc3339(value) {
        return Some(with_zone.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|naive| naive.and_utc())
}

impl ConnectionRequest {
    /// Turn wire fields into the model, applying every rule about incoming values.
    pub fn from_wire(wire: WireConnectionRequest) -> Result<Self, ModelError> {
        let id = present(wire.id).ok_or(ModelError::MissingId)?;
        let status = match present(wire.status) {
            Some(raw) => Some(raw.parse().map_err(|source| ModelError::Status {
                id: id.clone(),
                source,
            })?),
            None => None,
        };
        let last_modified = match present(wire.last_modified) {
            Some(raw) => {
                Some(
                    parse_last_modified(&raw).ok_or_else(|| ModelError::LastModified {
                        id: id.clone(),
                        value: raw,
                    })?,
                )
            }
            None => None,
        };
        Ok(Self {
            id,
            uri: present(wire.uri),
            user_id: present(wire.user_id),
            first_name: present(wire.first_name),
            middle_name: present(wire.middle_name),
            last_name: present(wire.last_name),
            loyalty_number: present(wire.loyalty_number),
            status,
            request_token: present(wire.request_token).map(SecretString::from),
            last_modified,
            emails: wire.emails.into_iter().filter_map(present).collect(),
            discount_code: present(wire.discount_code),
            message: present(wire.message),
        })
    }

    /// The request token, for the one call that needs it (the password grant).
    pub fn request_token_secret(&self) -> Option<&str> {
        self.request_token.as_ref().map(|t| t.expose_secret())
    }
}

impl ConnectionRequestPage {
    /// Convert a wire collection. Only the `ID` is required to act on an item: one with
    /// an unknown `status` or an unreadable `lastModified` is kept without that field
    /// ([`Degraded`]); one without an `ID`, or that could not be read at all, is set
    /// aside ([`Quarantined`]). One bad item never fails the page, so the queue behind
    /// it is still read.
    pub fn from_wire(wire: WireCollection) -> Self {
        let mut page = Self {
            items: Vec::with_capacity(wire.items.len()),
            next_page: present(wire.next_page),
            quarantined: Vec::new(),
            degraded: Vec::new(),
        };
        for rejected in wire.rejected {
            page.quarantined.push(Quarantined {
                key: rejected
                    .id
                    .clone()
                    .unwrap_or_else(|| format!("unidentified:{}", rejected.fingerprint)),
                id: rejected.id,
                reason: rejected.reason,
            });
        }
        for item in wire.items {
            let fingerprint = json::fingerprint(&format!("{item:?}"));
            let mut ignored = Vec::new();
            let mut item = item;
            loop {
                match ConnectionRequest::from_wire(item.clone()) {
                    Ok(request) => {
                        if !ignored.is_empty() {
                            page.degraded.push(Degraded {
                                id: request.id.clone(),
                                ignored: std::mem::take(&mut ignored),
                            });
                        }
                        page.items.push(request);
                        break;
                    }
                    Err(ModelError::Status { .. }) if !ignored.contains(&"status") => {
                        item.status = None;
                        ignored.push("status");
                    }
                    Err(ModelError::LastModified { .. }) if !ignored.contains(&"lastModified") => {
                        item.last_modified = None;
                        ignored.push("lastModified");
                    }
                    Err(_) => {
                        page.quarantined.push(Quarantined {
                            id: None,
                            key: format!("unidentified:{fingerprint}"),
                            reason: "missing_id",
                        });
                        break;
                    }
                }
            }
        }
        page
    }
}

/// Debug output is safe for logs: personal data masked, the request token redacted.
impl fmt::Debug for ConnectionRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let emails: Vec<_> = self
            .emails
            .iter()
            .map(|e| privacy::email(Some(e)))
            .collect();
        f.debug_struct("ConnectionRequest")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field(
                "names",
                &masked_names(&self.first_name, &self.middle_name, &self.last_name),
            )
            .field(
                "loyalty_number",
                &privacy::loyalty(self.loyalty_number.as_deref()),
            )
            .field("status", &self.status)
            .field(
                "request_token",
                &self.request_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("last_modified", &self.last_modified)
            .field("emails", &emails)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn wire() -> WireConnectionRequest {
        WireConnectionRequest {
            id: Some("abc".into()),
            first_name: Some("Maria".into()),
            last_name: Some("Smith".into()),
            loyalty_number: Some("23242526".into()),
            status: Some("pending".into()),
            request_token: Some("secret-token".into()),
            last_modified: Some("2014-04-29T23:19:03".into()),
            emails: [
                Some("maria@example.com".into()),
                None,
                Some("  ".into()),
                None,
                Some("m2@example.com".into()),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn last_modified_without_zone_is_utc() {
        let request = ConnectionRequest::from_wire(wire()).unwrap();
        assert_eq!(
            request.last_modified,
            Some(Utc.with_ymd_and_hms(2014, 4, 29, 23, 19, 3).unwrap())
        );
        assert_eq!(
            parse_last_modified("2014-04-29T23:19:03+02:00"),
            Some(Utc.with_ymd_and_hms(2014, 4, 29, 21, 19, 3).unwrap())
        );
        assert!(parse_last_modified("yesterday").is_none());
    }

    #[test]
    fn blank_values_are_absent_and_emails_keep_order() {
        let request = ConnectionRequest::from_wire(wire()).unwrap();
        assert_eq!(request.emails, ["maria@example.com", "m2@example.com"]);
        assert_eq!(request.middle_name, None);
        assert_eq!(request.status, Some(ConnectionStatus::Pending));
    }

    #[test]
    fn missing_id_unknown_status_and_bad_dates_are_errors() {
        let mut no_id = wire();
        no_id.id = Some(" ".into());
        assert_eq!(
            ConnectionRequest::from_wire(no_id).unwrap_err(),
            ModelError::MissingId
        );
        let mut bad_status = wire();
        bad_status.status = Some("Waiting".into());
        assert!(matches!(
            ConnectionRequest::from_wire(bad_status).unwrap_err(),
            ModelError::Status { .. }
        ));
        let mut bad_date = wire();
        bad_date.last_modified = Some("29/04/2014".into());
        assert!(matches!(
            ConnectionRequest::from_wire(bad_date).unwrap_err(),
            ModelError::LastModified { .. }
        ));
    }

    #[test]
    fn a_page_keeps_what_it_can_act_on_and_sets_the_rest_aside() {
        let mut bad_status = wire();
        bad_status.id = Some("bad-status".into());
        bad_status.status = Some("Waiting".into());
        let mut bad_both = wire();
        bad_both.id = Some("bad-both".into());
        bad_both.status = Some("???".into());
        bad_both.last_modified = Some("29/04/2014".into());
        let mut no_id = wire();
        no_id.id = None;
        let page = ConnectionRequestPage::from_wire(WireCollection {
            items: vec![wire(), bad_status, no_id, bad_both],
            next_page: Some("next".into()),
            rejected: vec![WireRejected {
                index: 9,
                id: Some("unreadable".into()),
                fingerprint: "f00".into(),
                reason: "malformed_item",
            }],
        });
        let ids: Vec<_> = page.items.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["abc", "bad-status", "bad-both"]);
        assert_eq!(page.items[1].status, None);
        assert_eq!(page.items[2].last_modified, None);
        assert_eq!(
            page.degraded,
            [
                Degraded {
                    id: "bad-status".into(),
                    ignored: vec!["status"]
                },
                Degraded {
                    id: "bad-both".into(),
                    ignored: vec!["status", "lastModified"]
                }
            ]
        );
        assert_eq!(page.quarantined.len(), 2);
        assert_eq!(page.quarantined[0].key, "unreadable");
        assert_eq!(page.quarantined[1].id, None);
        assert_eq!(page.quarantined[1].reason, "missing_id");
        assert!(page.quarantined[1].key.starts_with("unidentified:"));
        let shown = format!("{:?}", page.quarantined);
        assert!(
            !shown.contains("Smith") && !shown.contains("23242526"),
            "{shown}"
        );
        assert_eq!(page.next_page.as_deref(), Some("next"));
    }

    #[test]
    fn debug_masks_personal_data_and_redacts_the_token() {
        let shown = format!("{:?}", ConnectionRequest::from_wire(wire()).unwrap());
        for secret in [
            "Maria",
            "Smith",
            "23242526",
            "maria@example.com",
            "secret-token",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked in {shown}");
        }
        assert!(shown.contains("abc"));
        assert!(shown.contains("[REDACTED]"));
    }

    #[test]
    fn wire_debug_masks_personal_data_and_redacts_the_token() {
        let mut wire = wire();
        wire.emails[0] = Some("maria@example.com".into());
        wire.message = Some("call maria@example.com about 23242526".into());
        let shown = format!("{wire:?}");
        for secret in [
            "Maria",
            "Smith",
            "23242526",
            "maria@example.com",
            "secret-token",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked in {shown}");
        }
        assert!(shown.contains("abc"), "{shown}");
        assert!(shown.contains("S***"), "{shown}");
        let collection = format!(
            "{:?}",
            WireCollection {
                items: vec![wire],
                ..WireCollection::default()
            }
        );
        assert!(!collection.contains("Smith"), "{collection}");
    }

    /// An e-mail, a name, a loyalty number and a token inside documents the parsers
    /// refuse: the error (Display and Debug) says what is wrong, never what was there.
    #[test]
    fn parse_errors_do_not_quote_the_input() {
        let secrets = ["maria.smith@example.com", "Smith", "5314636889", "tok-7781"];
        let bodies_json = [
            r#"{"Items": "maria.smith@example.com", "NextPage": null}"#,
            r#"{"Items": [], "NextPage": ["Smith"]}"#,
            r#"{"Items": [] "NextPage": maria.smith@example.com}"#,
            r#"{"ID": "1", "emailAddresses": "maria.smith@example.com"}"#,
            r#"{"ID": "1", "emailAddresses": {"email1": {"x": 5314636889}}}"#,
            r#"{"ID": "1", "requestToken": "tok-7781"#,
        ];
        let mut errors: Vec<ModelError> = Vec::new();
        for body in bodies_json {
            let collection = json::parse_collection(body).err();
            let request = json::parse_request(body).err();
            assert!(
                collection.is_some() || request.is_some(),
                "{body} was accepted by both parsers"
            );
            errors.extend(collection);
            errors.extend(request);
        }
        for body in [
            "<ConnectionRequests><Items>&maria;</Items></ConnectionRequests>",
            "<ConnectionRequests><Smith></Maria></ConnectionRequests>",
            "<Smith/>",
            "<ConnectionRequest><ID>1</ID><RequestToken>tok-7781",
            "<ConnectionRequest a=5314636889><ID>1</ID></ConnectionRequest>",
        ] {
            let error = xml::parse_collection(body)
                .err()
                .unwrap_or_else(|| panic!("{body} was accepted"));
            errors.push(error);
        }
        let mut request = wire();
        request.last_modified = Some("maria.smith@example.com".into());
        errors.push(ConnectionRequest::from_wire(request).unwrap_err());
        let mut request = wire();
        request.status = Some("Smith 5314636889".into());
        errors.push(ConnectionRequest::from_wire(request).unwrap_err());
        assert!(errors.len() >= 13, "{errors:?}");
        for error in &errors {
            let shown = format!("{error} / {error:?}");
            for secret in secrets {
                assert!(!shown.contains(secret), "{secret} leaked in {shown}");
            }
        }
    }
}
