//! JSON wire formats: v3.2 camelCase, v3.1 and v3.0 PascalCase.
//!
//! One set of serde structs reads every version: each field has its v3.2 name and the
//! legacy PascalCase name as an alias. Values are read leniently (a number where a string
//! is expected is kept as its text); meaning is checked later by the model.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{ModelError, WireCollection, WireConnectionRequest, WireErrorBody};
use crate::model::ConnectionStatus;

fn opt_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::Null => None,
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        // The value itself is never quoted: it may be personal data.
        other => {
            return Err(serde::de::Error::custom(format!(
                "expected a string, found {}",
                kind(&other)
            )))
        }
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct JsonEmails {
    #[serde(rename = "email1", alias = "Email1", deserialize_with = "opt_text")]
    email1: Option<String>,
    #[serde(rename = "email2", alias = "Email2", deserialize_with = "opt_text")]
    email2: Option<String>,
    #[serde(rename = "email3", alias = "Email3", deserialize_with = "opt_text")]
    email3: Option<String>,
    #[serde(rename = "email4", alias = "Email4", deserialize_with = "opt_text")]
    email4: Option<String>,
    #[serde(rename = "email5", alias = "Email5", deserialize_with = "opt_text")]
    email5: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct JsonRequest {
    #[serde(
        rename = "ID",
        alias = "Id",
        alias = "id",
        deserialize_with = "opt_text"
    )]
    id: Option<String>,
    #[serde(
        rename = "URI",
        alias = "Uri",
        alias = "uri",
        deserialize_with = "opt_text"
    )]
    uri: Option<String>,
    #[serde(
        rename = "userId",
        alias = "UserId",
        alias = "UserID",
        deserialize_with = "opt_text"
    )]
    user_id: Option<String>,
    #[serde(
        rename = "firstName",
        alias = "FirstName",
        deserialize_with = "opt_text"
    )]
    first_name: Option<String>,
    #[serde(
        rename = "middleName",
        alias = "MiddleName",
        deserialize_with = "opt_text"
    )]
    middle_name: Option<String>,
    #[serde(rename = "lastName", alias = "LastName", deserialize_with = "opt_text")]
    last_name: Option<String>,
    #[serde(
        rename = "loyaltyNumber",
        alias = "LoyaltyNumber",
        deserialize_with = "opt_text"
    )]
    loyalty_number: Option<String>,
    #[serde(rename = "status", alias = "Status", deserialize_with = "opt_text")]
    status: Option<String>,
    #[serde(
        rename = "requestToken",
        alias = "RequestToken",
        deserialize_with = "opt_text"
    )]
    request_token: Option<String>,
    #[serde(
        rename = "lastModified",
        alias = "LastModified",
        deserialize_with = "opt_text"
    )]
    last_modified: Option<String>,
    #[serde(rename = "emailAddresses", alias = "EmailAddresses")]
    email_addresses: Option<JsonEmails>,
    #[serde(
        rename = "DiscountCode",
        alias = "discountCode",
        deserialize_with = "opt_text"
    )]
    discount_code: Option<String>,
    #[serde(rename = "Message", alias = "message", deserialize_with = "opt_text")]
    message: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct JsonCollection {
    #[serde(rename = "Items", alias = "items")]
    items: Option<Vec<Value>>,
    #[serde(rename = "NextPage", alias = "nextPage", deserialize_with = "opt_text")]
    next_page: Option<String>,
}

impl From<JsonRequest> for WireConnectionRequest {
    fn from(json: JsonRequest) -> Self {
        let emails = json.email_addresses.unwrap_or_default();
        WireConnectionRequest {
            id: json.id,
            uri: json.uri,
            user_id: json.user_id,
            first_name: json.first_name,
            middle_name: json.middle_name,
            last_name: json.last_name,
            loyalty_number: json.loyalty_number,
            status: json.status,
            request_token: json.request_token,
            last_modified: json.last_modified,
            emails: [
                emails.email1,
                emails.email2,
                emails.email3,
                emails.email4,
                emails.email5,
            ],
            discount_code: json.discount_code,
            message: json.message,
        }
    }
}

/// serde_json's message without the values it quotes (they may be personal data).
fn json_err(e: serde_json::Error) -> ModelError {
    ModelError::Json(crate::privacy::json_error(&e))
}

/// Read a collection (`Items` + `NextPage`, either absent or null at the end).
pub fn parse_collection(body: &str) -> Result<WireCollection, ModelError> {
    let value: Value = serde_json::from_str(body).map_err(json_err)?;
    if !value.is_object() {
        return Err(ModelError::Json(format!(
            "expected an object with Items, found {}",
            kind(&value)
        )));
    }
    let collection: JsonCollection = serde_json::from_value(value).map_err(json_err)?;
    let mut wire = WireCollection {
        next_page: collection.next_page,
        ..WireCollection::default()
    };
    // Each item on its own: one that cannot be read is set aside, not the whole page.
    for (index, item) in collection.items.unwrap_or_default().into_iter().enumerate() {
        let id = item_id(&item);
        let fingerprint = fingerprint(&item.to_string());
        match serde_json::from_value::<JsonRequest>(item) {
            Ok(request) => wire.items.push(request.into()),
            Err(_) => wire.rejected.push(super::WireRejected {
                index,
                id,
                fingerprint,
                reason: "malformed_item",
            }),
        }
    }
    Ok(wire)
}

/// The `ID` of an item that cannot be read as a whole, if it has a readable one.
fn item_id(item: &Value) -> Option<String> {
    let object = item.as_object()?;
    ["ID", "Id", "id"]
        .iter()
        .find_map(|key| object.get(*key)?.as_str())
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
}

/// A stable, non-reversible name for an item without an id (FNV-1a of its text).
pub(crate) fn fingerprint(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// Read one connection request (GET by id).
pub fn parse_request(body: &str) -> Result<WireConnectionRequest, ModelError> {
    let value: Value = serde_json::from_str(body).map_err(json_err)?;
    if !value.is_object() {
        return Err(ModelError::Json(format!(
            "expected a connection request object, found {}",
            kind(&value)
        )));
    }
    let request: JsonRequest = serde_json::from_value(value).map_err(json_err)?;
    Ok(request.into())
}

/// The `ID` of a create response (deprecated in 3.2, may be empty).
pub fn parse_create_response(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    let request: JsonRequest = serde_json::from_value(value).ok()?;
    request.id.filter(|id| !id.trim().is_empty())
}

/// An `{"Error": {"Message", "Server-Time", "Id"}}` body, if that is what this is.
pub fn parse_error_body(body: &str) -> Option<WireErrorBody> {
    let value: Value = serde_json::from_str(body).ok()?;
    let object = value.as_object()?;
    let (_, error) = object
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case("error"))?;
    let error = error.as_object()?;
    let field = |name: &str| {
        error
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| match v {
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                other => Some(other.to_string()),
            })
    };
    Some(WireErrorBody {
        message: field("Message"),
        server_time: field("Server-Time"),
        id: field("Id"),
    })
}

/// The v3.2 status update body: `{"status": "CRSUC"}`.
pub fn status_body_v32(status: ConnectionStatus) -> String {
    serde_json::json!({ "status": status.as_str() }).to_string()
}

/// The v3.1 status update body: `{"Status": "CRSUC"}`.
pub fn status_body_v31(status: ConnectionStatus) -> String {
    serde_json::json!({ "Status": status.as_str() }).to_string()
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_without_items_or_next_page_is_empty_and_final() {
        let empty = parse_collection("{}").unwrap();
        assert!(empty.items.is_empty());
        assert_eq!(empty.next_page, None);
        let null = parse_collection(r#"{"Items":null,"NextPage":null}"#).unwrap();
        assert!(null.items.is_empty());
        assert_eq!(null.next_page, None);
    }

    #[test]
    fn numbers_are_kept_as_text_and_wrong_shapes_are_errors() {
        let wire = parse_request(r#"{"ID":"x","loyaltyNumber":1234}"#).unwrap();
        assert_eq!(wire.loyalty_number.as_deref(), Some("1234"));
        assert!(matches!(parse_collection("[]"), Err(ModelError::Json(_))));
        assert!(matches!(
            parse_collection("{\"Items\":"),
            Err(ModelError::Json(_))
        ));
        assert!(matches!(
            parse_request(r#"{"ID":{"a":1}}"#),
            Err(ModelError::Json(_))
        ));
    }

    #[test]
    fn an_unreadable_item_is_set_aside_without_its_values() {
        let wire = parse_collection(
            r#"{"Items":[{"ID":"ok1","lastName":"Ann"},
                         {"ID":"bad1","lastName":{"secret":"Smith"}},
                         "not an object",
                         {"ID":"ok2","emailAddresses":"x"},
                         {"lastName":["Doe"]}],
                "NextPage":null}"#,
        )
        .unwrap();
        let ids: Vec<_> = wire.items.iter().map(|i| i.id.as_deref()).collect();
        assert_eq!(ids, [Some("ok1")]);
        let rejected: Vec<_> = wire
            .rejected
            .iter()
            .map(|r| (r.index, r.id.as_deref()))
            .collect();
        assert_eq!(
            rejected,
            [(1, Some("bad1")), (2, None), (3, Some("ok2")), (4, None)]
        );
        let shown = format!("{:?}", wire.rejected);
        for secret in ["Smith", "Doe", "not an object"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert_ne!(wire.rejected[1].fingerprint, wire.rejected[3].fingerprint);
        assert_eq!(
            wire.rejected[1].fingerprint,
            fingerprint(&serde_json::json!("not an object").to_string())
        );
    }

    #[test]
    fn error_bodies_are_recognised() {
        let error = parse_error_body(
            r#"{"Error":{"Message":"Boom","Server-Time":"2022-11-02T09:39:21","Id":"E1"}}"#,
        )
        .unwrap();
        assert_eq!(error.message.as_deref(), Some("Boom"));
        assert_eq!(error.server_time.as_deref(), Some("2022-11-02T09:39:21"));
        assert_eq!(error.id.as_deref(), Some("E1"));
        assert_eq!(parse_error_body(r#"{"Items":[]}"#), None);
    }

    #[test]
    fn status_bodies_per_version() {
        assert_eq!(
            status_body_v32(ConnectionStatus::Connected),
            r#"{"status":"CRSUC"}"#
        );
        assert_eq!(
            status_body_v31(ConnectionStatus::Retry),
            r#"{"Status":"CRRET"}"#
        );
    }
}
