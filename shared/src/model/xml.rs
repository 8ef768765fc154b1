//! XML wire formats: v3.2 camelCase (`xsi:nil="true"` for nulls) and v3.0 PascalCase.
//!
//! Concur answers XML when no `Accept` header is sent, and older versions answer XML
//! always. The document is read into a small element tree (namespaces ignored, entity
//! references resolved), then fields are picked by their local name, case-insensitively,
//! so one reader serves both versions.

use std::borrow::Cow;

use quick_xml::escape::{escape, resolve_predefined_entity};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::{ModelError, WireCollection, WireConnectionRequest, WireErrorBody};
use crate::model::ConnectionStatus;

/// The deepest nesting accepted; Concur's documents are four levels deep.
const MAX_DEPTH: usize = 32;

#[derive(Debug, Default)]
struct Element {
    name: String,
    nil: bool,
    text: String,
    children: Vec<Element>,
}

impl Element {
    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(name))
    }

    fn value(&self) -> Option<String> {
        (!self.nil).then(|| self.text.trim().to_owned())
    }

    fn field(&self, name: &str) -> Option<String> {
        self.child(name).and_then(Element::value)
    }
}

/// quick-xml's message without the names and values it quotes (they may be personal data).
fn xml_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Xml(crate::privacy::without_values(&e.to_string()))
}

fn open(start: &BytesStart<'_>) -> Result<Element, ModelError> {
    let name = start.local_name().as_ref().to_owned();
    let mut nil = false;
    for attribute in start.attributes() {
        let attribute = attribute.map_err(xml_err)?;
        if attribute.key.local_name().as_ref() == "nil" {
            nil = attribute.value.trim().eq_ignore_ascii_case("true");
        }
    }
    Ok(Element {
        name,
        nil,
        ..Default::default()
    })
}

/// Concur's own v3.2 example writes `NextPage` with a bare `&` (`?limit=2&offset=2`),
/// which is not well-formed XML. Tolerate it: an `&` that does not start a reference
/// (`&name;`, `&#NN;`, `&#xHH;`) is read as a literal ampersand.
fn escape_bare_ampersands(body: &str) -> Cow<'_, str> {
    fn starts_reference(rest: &str) -> bool {
        let Some(end) = rest.find(';') else {
            return false;
        };
        let name = &rest[..end];
        if let Some(hex) = name.strip_prefix("#x") {
            return !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit());
        }
        if let Some(dec) = name.strip_prefix('#') {
            return !dec.is_empty() && dec.chars().all(|c| c.is_ascii_digit());
        }
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
            && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
    }
    let bare = |(i, _): &(usize, &str)| !starts_reference(&body[i + 1..]);
    if !body.match_indices('&').any(|m| bare(&m)) {
        return Cow::Borrowed(body);
    }
    let mut fixed = String::with_capacity(body.len() + 16);
    let mut last = 0;
    for m in body.match_indices('&').filter(bare) {
        fixed.push_str(&body[last..m.0]);
        fixed.push_str("&amp;");
        last = m.0 + 1;
    }
    fixed.push_str(&body[last..]);
    Cow::Owned(fixed)
}

fn parse_tree(body: &str) -> Result<Element, ModelError> {
    let body = escape_bare_ampersands(body);
    let mut reader = Reader::from_str(&body);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let event = reader.read_event().map_err(xml_err)?;
        match event {
            Event::Start(start) => {
                if root.is_some() {
                    return Err(ModelError::Xml("content after the root element".into()));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(ModelError::Xml("elements nested too deeply".into()));
                }
                stack.push(open(&start)?);
            }
            Event::Empty(start) => {
                let element = open(&start)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None if root.is_none() => root = Some(element),
                    None => return Err(ModelError::Xml("more than one root element".into())),
                }
            }
            Event::End(_) => {
                let element = stack
                    .pop()
                    .ok_or_else(|| ModelError::Xml("unbalanced end tag".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => root = Some(element),
                }
            }
            Event::Text(text) => {
                if let Some(current) = stack.last_mut() {
                    current.text.push_str(&text.xml10_content());
                }
            }
            Event::CData(data) => {
                if let Some(current) = stack.last_mut() {
                    current.text.push_str(&data.xml10_content());
                }
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref().map_err(xml_err)? {
                    Some(ch) => ch.to_string(),
                    None => resolve_predefined_entity(&reference)
                        .ok_or_else(|| {
                            ModelError::Xml(format!(
                                "unknown entity ({} characters)",
                                reference.len()
                            ))
                        })?
                        .to_owned(),
                };
                if let Some(current) = stack.last_mut() {
                    current.text.push_str(&resolved);
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(ModelError::Xml("document ends inside an element".into()));
    }
    root.ok_or_else(|| ModelError::Xml("empty document".into()))
}

fn request_from(element: &Element) -> WireConnectionRequest {
    let emails = element.child("emailAddresses");
    let email = |n: &str| emails.and_then(|e| e.field(n));
    WireConnectionRequest {
        id: element.field("ID"),
        uri: element.field("URI"),
        user_id: element.field("userId"),
        first_name: element.field("firstName"),
        middle_name: element.field("middleName"),
        last_name: element.field("lastName"),
        loyalty_number: element.field("loyaltyNumber"),
        status: element.field("status"),
        request_token: element.field("requestToken"),
        last_modified: element.field("lastModified"),
        emails: [
            email("email1"),
            email("email2"),
            email("email3"),
            email("email4"),
            email("email5"),
        ],
        discount_code: element.field("DiscountCode"),
        message: element.field("Message"),
    }
}

/// Read a collection. A lone `<ConnectionRequest>` root (as in the v3.0 examples) is a
/// collection of one with no next page.
pub fn parse_collection(body: &str) -> Result<WireCollection, ModelError> {
    let root = parse_tree(body)?;
    if root.is("ConnectionRequest") {
        return Ok(WireCollection {
            items: vec![request_from(&root)],
            rejected: Vec::new(),
            next_page: None,
        });
    }
    if !root.is("ConnectionRequests") {
        return Err(ModelError::UnexpectedRoot(root.name));
    }
    let items = root
        .child("Items")
        .map(|items| {
            items
                .children
                .iter()
                .filter(|c| c.is("ConnectionRequest"))
                .map(request_from)
                .collect()
        })
        .unwrap_or_default();
    Ok(WireCollection {
        items,
        rejected: Vec::new(),
        next_page: root.field("NextPage"),
    })
}

/// Read one connection request (GET by id).
pub fn parse_request(body: &str) -> Result<WireConnectionRequest, ModelError> {
    let root = parse_tree(body)?;
    if !root.is("ConnectionRequest") {
        return Err(ModelError::UnexpectedRoot(root.name));
    }
    Ok(request_from(&root))
}

/// The `ID` of a create response, if the body has one.
pub fn parse_create_response(body: &str) -> Option<String> {
    let root = parse_tree(body).ok()?;
    root.field("ID").filter(|id| !id.is_empty())
}

/// An `<Error><Message/><Server-Time/><Id/></Error>` body, if that is what this is.
pub fn parse_error_body(body: &str) -> Option<WireErrorBody> {
    let root = parse_tree(body).ok()?;
    let error = if root.is("Error") {
        &root
    } else {
        root.child("Error")?
    };
    Some(WireErrorBody {
        message: error.field("Message"),
        server_time: error.field("Server-Time"),
        id: error.field("Id"),
    })
}

/// The v3.0 status update body: a `ConnectionRequest` carrying its `ID` and `Status`
/// (v3.0 updates only the fields supplied).
pub fn status_body_v30(id: &str, status: ConnectionStatus) -> String {
    format!(
        "<ConnectionRequest xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><ID>{}</ID>\
         <Status>{}</Status></ConnectionRequest>",
        escape(id),
        status.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nil_entities_cdata_and_namespaces() {
        let wire = parse_request(
            r#"<?xml version="1.0"?><cr:ConnectionRequest xmlns:cr="urn:x" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
                 <cr:ID>a&amp;b</cr:ID><lastName>O&apos;Brien &#252;</lastName>
                 <middleName xsi:nil="true" /><firstName><![CDATA[<Jo>]]></firstName>
               </cr:ConnectionRequest>"#,
        )
        .unwrap();
        assert_eq!(wire.id.as_deref(), Some("a&b"));
        assert_eq!(wire.last_name.as_deref(), Some("O'Brien ü"));
        assert_eq!(wire.middle_name, None);
        assert_eq!(wire.first_name.as_deref(), Some("<Jo>"));
    }

    #[test]
    fn bare_ampersands_are_literal() {
        let wire = parse_collection(
            "<ConnectionRequests><Items/><NextPage>https://h/x/?limit=2&offset=2 &amp; &#38;</NextPage></ConnectionRequests>",
        )
        .unwrap();
        assert_eq!(
            wire.next_page.as_deref(),
            Some("https://h/x/?limit=2&offset=2 & &")
        );
        assert!(wire.items.is_empty());
    }

    #[test]
    fn broken_documents_are_errors() {
        for body in [
            "",
            "<ConnectionRequests><Items>",
            "<a></b>",
            "<a>&bogus;</a>",
            "<a>&#xZZ;</a>",
            "not xml at all",
            "<a/><b/>",
        ] {
            assert!(parse_collection(body).is_err(), "{body:?} was accepted");
        }
        assert!(matches!(
            parse_collection("<Other/>"),
            Err(ModelError::UnexpectedRoot(name)) if name == "Other"
        ));
    }

    #[test]
    fn error_bodies_are_recognised() {
        let error = parse_error_body(
            "<Error><Message>Boom</Message><Server-Time>t</Server-Time><Id>E1</Id></Error>",
        )
        .unwrap();
        assert_eq!(error.message.as_deref(), Some("Boom"));
        assert_eq!(error.id.as_deref(), Some("E1"));
        assert!(parse_error_body("<ConnectionRequests/>").is_none());
    }

    #[test]
    fn v30_status_body_escapes_the_id() {
        let body = status_body_v30("a<b", ConnectionStatus::AccountNotFound);
        assert!(body.contains("<ID>a&lt;b</ID>"));
        assert!(body.contains("<Status>CREU1</Status>"));
        let back = parse_request(&body).unwrap();
        assert_eq!(back.id.as_deref(), Some("a<b"));
        assert_eq!(back.status.as_deref(), Some("CREU1"));
    }
}
