//! Wire formats, written from the reference pages (not from the client crate).
//!
//! * v3.2: camelCase JSON / XML (`firstName`, `emailAddresses.email1..5`, `userId`, `ID`, `URI`).
//! * v3.1: PascalCase (`FirstName`, `EmailAddresses.Email1..5`), no `userId`.
//! * v3.0: PascalCase with `DiscountCode` and `Message`, no e-mails, no `userId`.
//!
//! XML follows the page's examples: a root carrying the `xsd`/`xsi` namespaces and
//! `<name xsi:nil="true" />` for null values.

use quick_xml::escape::escape;
use quick_xml::events::Event;
use quick_xml::Reader;
use serde::Serialize;

use crate::state::PutStatus;

pub const XSD_XSI: &str = r#"xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance""#;

/// The three API versions the sandbox speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V30,
    V31,
    V32,
}

impl Version {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "v3.0" => Some(Self::V30),
            "v3.1" => Some(Self::V31),
            "v3.2" => Some(Self::V32),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V30 => "3.0",
            Self::V31 => "3.1",
            Self::V32 => "3.2",
        }
    }
    /// `/api/v3.x/common/connectionrequests/`
    pub fn collection_path(self) -> String {
        format!("/api/v{}/common/connectionrequests/", self.as_str())
    }
}

/// Response body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Xml,
}

impl Format {
    /// JSON only when the Accept header asks for JSON; XML otherwise
    /// (no header, `*/*`, `application/xml`): "XML is returned for backward compatibility".
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.to_ascii_lowercase().contains("json") => Format::Json,
            _ => Format::Xml,
        }
    }
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json; charset=utf-8",
            Format::Xml => "application/xml; charset=utf-8",
        }
    }
}

/// Everything needed to render one connection request, in any version.
#[derive(Debug, Clone)]
pub struct CrView {
    pub id: String,
    pub uri: String,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub last_name: Option<String>,
    pub loyalty_number: Option<String>,
    /// Already in the version's spelling.
    pub status: String,
    pub request_token: Option<String>,
    pub last_modified: String,
    pub emails: [Option<String>; 5],
    pub user_id: String,
}

#[derive(Serialize)]
struct Emails32<'a> {
    email1: &'a Option<String>,
    email2: &'a Option<String>,
    email3: &'a Option<String>,
    email4: &'a Option<String>,
    email5: &'a Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Cr32<'a> {
    first_name: &'a Option<String>,
    middle_name: &'a Option<String>,
    last_name: &'a Option<String>,
    loyalty_number: &'a Option<String>,
    status: &'a str,
    request_token: &'a Option<String>,
    last_modified: &'a str,
    email_addresses: Emails32<'a>,
    user_id: &'a str,
    #[serde(rename = "ID")]
    id: &'a str,
    #[serde(rename = "URI")]
    uri: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Emails31<'a> {
    email1: &'a Option<String>,
    email2: &'a Option<String>,
    email3: &'a Option<String>,
    email4: &'a Option<String>,
    email5: &'a Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Cr31<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    #[serde(rename = "URI")]
    uri: &'a str,
    first_name: &'a Option<String>,
    middle_name: &'a Option<String>,
    last_name: &'a Option<String>,
    loyalty_number: &'a Option<String>,
    status: &'a str,
    request_token: &'a Option<String>,
    last_modified: &'a str,
    email_addresses: Emails31<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Cr30<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    #[serde(rename = "URI")]
    uri: &'a str,
    first_name: &'a Option<String>,
    middle_name: &'a Option<String>,
    last_name: &'a Option<String>,
    loyalty_number: &'a Option<String>,
    status: &'a str,
    discount_code: Option<String>,
    request_token: &'a Option<String>,
    message: Option<String>,
    last_modified: &'a str,
}

fn json_value(v: Version, cr: &CrView) -> String {
    let e = &cr.emails;
    let r = match v {
        Version::V32 => serde_json::to_string(&Cr32 {
            first_name: &cr.first_name,
            middle_name: &cr.middle_name,
            last_name: &cr.last_name,
            loyalty_number: &cr.loyalty_number,
            status: &cr.status,
            request_token: &cr.request_token,
            last_modified: &cr.last_modified,
            email_addresses: Emails32 {
                email1: &e[0],
                email2: &e[1],
                email3: &e[2],
                email4: &e[3],
                email5: &e[4],
            },
            user_id: &cr.user_id,
            id: &cr.id,
            uri: &cr.uri,
        }),
        Version::V31 => serde_json::to_string(&Cr31 {
            id: &cr.id,
            uri: &cr.uri,
            first_name: &cr.first_name,
            middle_name: &cr.middle_name,
            last_name: &cr.last_name,
            loyalty_number: &cr.loyalty_number,
            status: &cr.status,
            request_token: &cr.request_token,
            last_modified: &cr.last_modified,
            email_addresses: Emails31 {
                email1: &e[0],
                email2: &e[1],
                email3: &e[2],
                email4: &e[3],
                email5: &e[4],
            },
        }),
        Version::V30 => serde_json::to_string(&Cr30 {
            id: &cr.id,
            uri: &cr.uri,
            first_name: &cr.first_name,
            middle_name: &cr.middle_name,
            last_name: &cr.last_name,
            loyalty_number: &cr.loyalty_number,
            status: &cr.status,
            discount_code: None,
            request_token: &cr.request_token,
            message: None,
            last_modified: &cr.last_modified,
        }),
    };
    r.unwrap_or_else(|_| "null".to_string())
}

fn xml_field(out: &mut String, name: &str, value: Option<&str>) {
    match value {
        Some(v) => {
            out.push('<');
            out.push_str(name);
            out.push('>');
            out.push_str(&escape(v));
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
        None => {
            out.push('<');
            out.push_str(name);
            out.push_str(" xsi:nil=\"true\" />");
        }
    }
}

fn xml_cr(out: &mut String, v: Version, cr: &CrView, root_ns: bool) {
    if root_ns {
        out.push_str("<ConnectionRequest ");
        out.push_str(XSD_XSI);
        out.push('>');
    } else {
        out.push_str("<ConnectionRequest>");
    }
    let o = |s: &Option<String>| s.clone();
    match v {
        Version::V32 => {
            xml_field(out, "ID", Some(&cr.id));
            xml_field(out, "URI", Some(&cr.uri));
            xml_field(out, "firstName", o(&cr.first_name).as_deref());
            xml_field(out, "middleName", o(&cr.middle_name).as_deref());
            xml_field(out, "lastName", o(&cr.last_name).as_deref());
            xml_field(out, "loyaltyNumber", o(&cr.loyalty_number).as_deref());
            xml_field(out, "status", Some(&cr.status));
            xml_field(out, "requestToken", o(&cr.request_token).as_deref());
            xml_field(out, "lastModified", Some(&cr.last_modified));
            out.push_str("<emailAddresses>");
            for (i, e) in cr.emails.iter().enumerate() {
                xml_field(out, &format!("email{}", i + 1), e.as_deref());
            }
            out.push_str("</emailAddresses>");
            xml_field(out, "userId", Some(&cr.user_id));
        }
        Version::V31 => {
            xml_field(out, "ID", Some(&cr.id));
            xml_field(out, "URI", Some(&cr.uri));
            xml_field(out, "FirstName", o(&cr.first_name).as_deref());
            xml_field(out, "MiddleName", o(&cr.middle_name).as_deref());
            xml_field(out, "LastName", o(&cr.last_name).as_deref());
            xml_field(out, "LoyaltyNumber", o(&cr.loyalty_number).as_deref());
            xml_field(out, "Status", Some(&cr.status));
            xml_field(out, "RequestToken", o(&cr.request_token).as_deref());
            xml_field(out, "LastModified", Some(&cr.last_modified));
            out.push_str("<EmailAddresses>");
            for (i, e) in cr.emails.iter().enumerate() {
                xml_field(out, &format!("Email{}", i + 1), e.as_deref());
            }
            out.push_str("</EmailAddresses>");
        }
        Version::V30 => {
            // Element order of the v3.0 resource page's examples.
            xml_field(out, "ID", Some(&cr.id));
            xml_field(out, "URI", Some(&cr.uri));
            xml_field(out, "FirstName", o(&cr.first_name).as_deref());
            xml_field(out, "MiddleName", o(&cr.middle_name).as_deref());
            xml_field(out, "LastName", o(&cr.last_name).as_deref());
            xml_field(out, "LoyaltyNumber", o(&cr.loyalty_number).as_deref());
            xml_field(out, "Status", Some(&cr.status));
            xml_field(out, "DiscountCode", None);
            xml_field(out, "RequestToken", o(&cr.request_token).as_deref());
            xml_field(out, "Message", None);
            xml_field(out, "LastModified", Some(&cr.last_modified));
        }
    }
    out.push_str("</ConnectionRequest>");
}

/// One connection request (GET by id).
pub fn render_one(v: Version, f: Format, cr: &CrView) -> String {
    match f {
        Format::Json => json_value(v, cr),
        Format::Xml => {
            let mut out = String::new();
            xml_cr(&mut out, v, cr, true);
            out
        }
    }
}

/// A page of connection requests: `Items` and `NextPage` (null at the end).
pub fn render_page(v: Version, f: Format, items: &[CrView], next: Option<&str>) -> String {
    match f {
        Format::Json => {
            // Field order as on the page: Items, then NextPage.
            let items: Vec<String> = items.iter().map(|c| json_value(v, c)).collect();
            let next = serde_json::to_string(&next).unwrap_or_else(|_| "null".into());
            format!("{{\"Items\":[{}],\"NextPage\":{next}}}", items.join(","))
        }
        Format::Xml => {
            let mut out = String::from("<ConnectionRequests ");
            out.push_str(XSD_XSI);
            out.push_str("><Items>");
            for c in items {
                xml_cr(&mut out, v, c, false);
            }
            out.push_str("</Items>");
            xml_field(&mut out, "NextPage", next);
            out.push_str("</ConnectionRequests>");
            out
        }
    }
}

/// The (deprecated) body of POST connectionrequests: `ID` and `URI`.
pub fn render_created(f: Format, id: &str, uri: &str) -> String {
    match f {
        Format::Json => serde_json::json!({ "ID": id, "URI": uri }).to_string(),
        Format::Xml => {
            let mut out = String::from("<Response ");
            out.push_str(XSD_XSI);
            out.push('>');
            xml_field(&mut out, "ID", Some(id));
            xml_field(&mut out, "URI", Some(uri));
            out.push_str("</Response>");
            out
        }
    }
}

/// The common error body of the HTTP status codes page: `Error` with
/// `Message`, `Server-Time`, `Id`.
pub fn render_error(f: Format, message: &str, server_time: &str, id: &str) -> String {
    match f {
        Format::Json => serde_json::json!({
            "Error": { "Message": message, "Server-Time": server_time, "Id": id }
        })
        .to_string(),
        Format::Xml => {
            let mut out = String::from("<Error>");
            xml_field(&mut out, "Message", Some(message));
            xml_field(&mut out, "Server-Time", Some(server_time));
            xml_field(&mut out, "Id", Some(id));
            out.push_str("</Error>");
            out
        }
    }
}

/// Reads the status of a PUT body.
///
/// JSON (`{"status": "CRSUC"}`; the key is matched case-insensitively, as the
/// .NET back end's JSON binding does, so v3.1's `Status` works too) or XML
/// (`<ConnectionRequest>…<Status>CRSUC</Status>…</ConnectionRequest>`, any
/// element named `status` in any case). XML is read when the Content-Type says
/// xml, or when there is no Content-Type and the body starts with `<`.
/// The value must be one of the documented codes, exactly.
pub fn parse_put_status(content_type: Option<&str>, body: &[u8]) -> Result<PutStatus, String> {
    let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8".to_string())?;
    let trimmed = text.trim_start_matches('\u{feff}').trim();
    if trimmed.is_empty() {
        return Err("the request body is empty; a status is required".into());
    }
    let is_xml = match content_type {
        Some(ct) => ct.to_ascii_lowercase().contains("xml"),
        None => trimmed.starts_with('<'),
    };
    let raw = if is_xml {
        xml_status(trimmed)?
    } else {
        let v: serde_json::Value =
            serde_json::from_str(trimmed).map_err(|e| format!("malformed JSON body: {e}"))?;
        let obj = v
            .as_object()
            .ok_or_else(|| "the body must be a JSON object".to_string())?;
        let val = obj
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("status"))
            .map(|(_, v)| v)
            .ok_or_else(|| "the body has no status".to_string())?;
        val.as_str()
            .ok_or_else(|| "status must be a string".to_string())?
            .to_string()
    };
    PutStatus::parse(&raw).ok_or_else(|| {
        format!("invalid status {raw:?}: expected CRSUC, CREU1, CREU2, CREU3, CRRET (or legacy CRPA1, CRPA2)")
    })
}

fn xml_status(text: &str) -> Result<String, String> {
    let mut reader = Reader::from_str(text);
    let mut in_status = false;
    let mut value = String::new();
    let mut saw_root = false;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                saw_root = true;
                if e.local_name().as_ref().eq_ignore_ascii_case("status") {
                    in_status = true;
                    value.clear();
                }
            }
            Ok(Event::Text(t)) if in_status => {
                value.push_str(&t.xml10_content());
            }
            Ok(Event::End(e)) => {
                if in_status && e.local_name().as_ref().eq_ignore_ascii_case("status") {
                    return Ok(value.trim().to_string());
                }
            }
            Ok(Event::Empty(e)) => {
                saw_root = true;
                if e.local_name().as_ref().eq_ignore_ascii_case("status") {
                    return Ok(String::new());
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("malformed XML body: {e}")),
        }
    }
    if saw_root {
        Err("the body has no Status element".into())
    } else {
        Err("malformed XML body".into())
    }
}
