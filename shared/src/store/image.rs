//! Reading a requests-table item, from a DynamoDB stream image or a read of the table.
//!
//! An item that cannot be read is named by the attribute at fault, never by its value
//! (the values are names, e-mail addresses, loyalty numbers and request tokens), and an
//! image larger than DynamoDB's item limit is refused before it is decoded.

use std::collections::HashMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde_dynamo::AttributeValue;

/// DynamoDB's item size limit: no stored item, so no stream image, is larger.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// An item that could not be read: which attribute, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    /// The attribute at fault (a path such as `history.2.status` for a nested one);
    /// `None` when the item as a whole is at fault (too large, a missing attribute).
    pub attribute: Option<String>,
    /// What is wrong, without the value.
    pub reason: String,
}

impl fmt::Display for ItemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.attribute {
            Some(attribute) => write!(f, "attribute {attribute}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for ItemError {}

/// The size DynamoDB counts for an item: attribute names and values (numbers as their
/// text, a little generous), nested maps and lists included.
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter()
        .map(|(name, value)| name.len() + value_size(value))
        .sum()
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
        AttributeValue::B(b) => b.len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::M(map) => 3 + item_size(map),
        AttributeValue::L(list) => 3 + list.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        AttributeValue::Ss(set) | AttributeValue::Ns(set) => set.iter().map(String::len).sum(),
        AttributeValue::Bs(set) => set.iter().map(Vec::len).sum(),
    }
}

/// Decode an item (a stream image, or a table read converted with `Into`). Refused
/// without decoding: an item above [`MAX_ITEM_BYTES`].
pub fn decode<T: DeserializeOwned>(item: impl Into<serde_dynamo::Item>) -> Result<T, ItemError> {
    let item: HashMap<String, AttributeValue> = item.into().into();
    let size = item_size(&item);
    if size > MAX_ITEM_BYTES {
        return Err(ItemError {
            attribute: None,
            reason: format!(
                "item of about {size} bytes is larger than DynamoDB's {MAX_ITEM_BYTES}"
            ),
        });
    }
    let deserializer = serde_dynamo::Deserializer::from_attribute_value(AttributeValue::M(item));
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        ItemError {
            attribute: (path != ".").then_some(path),
            reason: crate::privacy::dynamo_error(e.inner()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RequestItem;

    use crate::testing::received_image as image;

    #[test]
    fn a_readable_image_decodes() {
        let item: RequestItem = decode(image()).unwrap();
        assert_eq!(item.request_id, "r-1");
    }

    /// The error names the attribute, in Display and Debug, and never its value.
    #[test]
    fn errors_name_the_attribute_without_its_value() {
        for (name, bad, secret) in [
            (
                "last_name",
                AttributeValue::N("5314636889".into()),
                "5314636889",
            ),
            ("attempt", AttributeValue::N("12maria".into()), "maria"),
            ("attempt", AttributeValue::S("Smith".into()), "Smith"),
            (
                "state",
                AttributeValue::S("maria@example.com".into()),
                "maria",
            ),
            (
                "first_name",
                AttributeValue::Ss(vec!["Maria".into()]),
                "Maria",
            ),
        ] {
            let mut image = image();
            image.insert(name.to_owned(), bad);
            let error = decode::<RequestItem>(image).unwrap_err();
            let shown = format!("{error} / {error:?}");
            assert_eq!(error.attribute.as_deref(), Some(name), "{shown}");
            assert!(shown.contains(name), "{shown}");
            assert!(!shown.contains(secret), "{secret} leaked in {shown}");
        }
        let mut image = image();
        image.remove("request_id");
        let error = decode::<RequestItem>(image).unwrap_err();
        assert!(error.to_string().contains("request_id"), "{error}");
    }

    #[test]
    fn an_image_above_the_item_limit_is_refused_before_decoding() {
        let mut image = image();
        image.insert(
            "first_name".into(),
            AttributeValue::S("M".repeat(MAX_ITEM_BYTES)),
        );
        let error = decode::<RequestItem>(image).unwrap_err();
        assert!(error.to_string().contains("larger than"), "{error}");
        assert_eq!(error.attribute, None);
    }
}
