//! Property tests of what the connector reads from outside: the Concur JSON and XML
//! response parsers (arbitrary bytes, and arbitrary well-formed documents) and the
//! `NextPage` handling (arbitrary URIs). Every input ends in a clear error or a correct
//! parse, never a panic; errors never quote the input.

use proptest::prelude::*;
use triplink_shared::concur::next_page_offset;
use triplink_shared::model::{json, xml, ConnectionRequestPage, WireConnectionRequest};
use url::Url;

fn all_parsers(body: &str) {
    for result in [
        json::parse_collection(body)
            .map(ConnectionRequestPage::from_wire)
            .map(drop),
        json::parse_request(body).map(drop),
        xml::parse_collection(body)
            .map(ConnectionRequestPage::from_wire)
            .map(drop),
        xml::parse_request(body).map(drop),
    ] {
        if let Err(error) = result {
            // A clear error: some words, bounded, whatever the input.
            let shown = error.to_string();
            assert!(!shown.is_empty());
            assert!(shown.len() < 400 + body.len().min(200), "{shown}");
        }
    }
    let _ = json::parse_error_body(body);
    let _ = json::parse_create_response(body);
    let _ = xml::parse_error_body(body);
    let _ = xml::parse_create_response(body);
}

/// One request's fields, as a server could send them.
#[derive(Debug, Clone)]
struct Fields {
    id: String,
    user_id: String,
    first_name: String,
    last_name: String,
    loyalty_number: Option<String>,
    request_token: String,
    status: &'static str,
    emails: Vec<String>,
}

fn fields() -> impl Strategy<Value = Fields> {
    (
        "[A-Za-z0-9-]{1,36}",
        "[a-f0-9-]{1,36}",
        "\\PC{0,30}",
        "\\PC{1,30}",
        proptest::option::of("\\PC{1,20}"),
        "[A-Za-z0-9]{1,64}",
        prop::sample::select(vec!["Pending", "CRSUC", "CREU1", "Processing", "Retry"]),
        prop::collection::vec("\\PC{1,40}", 0..=5),
    )
        .prop_map(
            |(
                id,
                user_id,
                first_name,
                last_name,
                loyalty_number,
                request_token,
                status,
                emails,
            )| {
                Fields {
                    id,
                    user_id,
                    first_name,
                    last_name,
                    loyalty_number,
                    request_token,
                    status,
                    emails,
                }
            },
        )
}

fn to_json(f: &Fields) -> serde_json::Value {
    let mut emails = serde_json::Map::new();
    for (i, email) in f.emails.iter().enumerate() {
        emails.insert(format!("email{}", i + 1), email.clone().into());
    }
    serde_json::json!({
        "ID": f.id, "userId": f.user_id, "firstName": f.first_name, "lastName": f.last_name,
        "loyaltyNumber": f.loyalty_number, "requestToken": f.request_token,
        "status": f.status, "emailAddresses": emails,
    })
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn to_xml(f: &Fields) -> String {
    let element = |name: &str, value: &str| format!("<{name}>{}</{name}>", escape(value));
    let mut xml = String::from("<ConnectionRequest>");
    xml.push_str(&element("ID", &f.id));
    xml.push_str(&element("userId", &f.user_id));
    xml.push_str(&element("firstName", &f.first_name));
    xml.push_str(&element("lastName", &f.last_name));
    match &f.loyalty_number {
        Some(number) => xml.push_str(&element("loyaltyNumber", number)),
        None => xml.push_str(r#"<loyaltyNumber xmlns:i="x" i:nil="true"/>"#),
    }
    xml.push_str(&element("requestToken", &f.request_token));
    xml.push_str(&element("status", f.status));
    xml.push_str("<emailAddresses>");
    for (i, email) in f.emails.iter().enumerate() {
        xml.push_str(&element(&format!("email{}", i + 1), email));
    }
    xml.push_str("</emailAddresses></ConnectionRequest>");
    xml
}

/// The wire fields read back equal what was sent (XML values are trimmed).
fn check(read: &WireConnectionRequest, sent: &Fields, trimmed: bool) -> Result<(), TestCaseError> {
    let v = |s: &str| {
        Some(if trimmed {
            s.trim().to_owned()
        } else {
            s.to_owned()
        })
    };
    prop_assert_eq!(&read.id, &v(&sent.id));
    prop_assert_eq!(&read.user_id, &v(&sent.user_id));
    prop_assert_eq!(&read.first_name, &v(&sent.first_name));
    prop_assert_eq!(&read.last_name, &v(&sent.last_name));
    prop_assert_eq!(
        &read.loyalty_number,
        &sent.loyalty_number.as_deref().and_then(v)
    );
    prop_assert_eq!(&read.request_token, &v(&sent.request_token));
    prop_assert_eq!(&read.status, &v(sent.status));
    for (i, email) in sent.emails.iter().enumerate() {
        prop_assert_eq!(&read.emails[i], &v(email));
    }
    for i in sent.emails.len()..5 {
        prop_assert_eq!(&read.emails[i], &None);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        all_parsers(&String::from_utf8_lossy(&bytes));
    }

    /// Text made of markup characters reaches deeper into both parsers than random bytes.
    #[test]
    fn arbitrary_markup_never_panics(
        body in "[<>/?!\\[\\]{}:,\"'&;#=a-zA-Z0-9 \\-]{0,300}",
        prefix in prop::sample::select(vec!["", "<ConnectionRequests><Items>", "{\"Items\": [", "<ConnectionRequest>"]),
    ) {
        all_parsers(&format!("{prefix}{body}"));
    }

    /// Arbitrarily nested elements: refused past the depth limit, never a stack overflow.
    #[test]
    fn deep_nesting_is_refused_not_a_crash(depth in 0usize..5000, json_depth in 0usize..5000) {
        let xml = format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
        let _ = xml::parse_collection(&xml);
        let json = format!("{}{}", "[".repeat(json_depth), "]".repeat(json_depth));
        let _ = json::parse_collection(&json);
    }

    /// A well-formed page of arbitrary requests reads back field for field, in JSON and XML.
    #[test]
    fn well_formed_documents_read_back(
        requests in prop::collection::vec(fields(), 0..10),
        next in proptest::option::of(0u32..10_000),
    ) {
        let next_page = next.map(|n| format!("https://us.api.concursolutions.com/api/v3.2/common/connectionrequests?limit=10&offset={n}"));
        let body = serde_json::json!({
            "Items": requests.iter().map(to_json).collect::<Vec<_>>(),
            "NextPage": next_page,
        });
        let page = json::parse_collection(&body.to_string()).unwrap();
        prop_assert_eq!(page.items.len(), requests.len());
        prop_assert!(page.rejected.is_empty());
        prop_assert_eq!(&page.next_page, &next_page);
        for (read, sent) in page.items.iter().zip(&requests) {
            check(read, sent, false)?;
        }

        let mut doc = String::from("<ConnectionRequests><Items>");
        for request in &requests {
            doc.push_str(&to_xml(request));
        }
        doc.push_str("</Items>");
        if let Some(next) = &next_page {
            doc.push_str(&format!("<NextPage>{}</NextPage>", escape(next)));
        }
        doc.push_str("</ConnectionRequests>");
        let page = xml::parse_collection(&doc).unwrap();
        prop_assert_eq!(page.items.len(), requests.len());
        prop_assert_eq!(&page.next_page, &next_page);
        for (read, sent) in page.items.iter().zip(&requests) {
            check(read, sent, true)?;
        }
        for (request, sent) in ConnectionRequestPage::from_wire(page).items.iter().zip(&requests) {
            prop_assert_eq!(&request.id, &sent.id.trim().to_owned());
        }
    }

    /// Any `NextPage` string: an offset or a clear error, never a panic; an integer offset
    /// where the version has them; a foreign host flagged, never taken.
    #[test]
    fn any_next_page_gives_an_offset_or_an_error(next in "\\PC{0,120}") {
        let called = Url::parse("https://us.api.concursolutions.com/api/v3.2/common/connectionrequests?limit=10").unwrap();
        match next_page_offset(&called, &next, true) {
            Ok(page) => {
                prop_assert!(page.offset.parse::<u32>().is_ok(), "{:?}", page);
            }
            Err(error) => prop_assert!(!error.is_empty()),
        }
    }

    /// URIs on any scheme and host: the offset is taken, the host is reported as foreign
    /// unless it is the one called, and nothing else of the URI is used.
    #[test]
    fn only_the_offset_of_a_next_page_is_used(
        scheme in prop::sample::select(vec!["https", "http", "ftp", "javascript"]),
        host in "[a-z]{1,10}(\\.[a-z]{2,5}){0,2}",
        same_host in any::<bool>(),
        offset in any::<u32>(),
        path in "(/[a-z0-9]{0,8}){0,4}",
    ) {
        let called = Url::parse("https://us.api.concursolutions.com/api/v3.2/common/connectionrequests?limit=10").unwrap();
        let host = if same_host { "US.api.concursolutions.com".to_owned() } else { host };
        let next = format!("{scheme}://{host}{path}?limit=10&offset={offset}");
        let page = next_page_offset(&called, &next, true).unwrap();
        prop_assert_eq!(page.offset, offset.to_string());
        let expected_foreign = (!host.eq_ignore_ascii_case("us.api.concursolutions.com")).then(|| host.to_ascii_lowercase());
        prop_assert_eq!(page.foreign_host, expected_foreign);
        // A relative NextPage is read against the called URL.
        let relative = next_page_offset(&called, &format!("?offset={offset}"), true).unwrap();
        prop_assert_eq!(relative.foreign_host, None);
    }
}

/// Found by `arbitrary_bytes_never_panic` on a fresh clone: an end tag that does not match
/// its start tag, whose name holds back quotes, was shown in the error past them.
#[test]
fn a_mismatched_end_tag_holding_back_quotes_is_not_shown() {
    let body = "<ConnectionRequests><a></b`maria`smith`secret>";
    for error in [
        xml::parse_collection(body).map(drop).unwrap_err(),
        xml::parse_request(body).map(drop).unwrap_err(),
    ] {
        let shown = error.to_string();
        assert!(shown.contains("malformed XML"), "{shown}");
        for value in ["maria", "smith", "secret"] {
            assert!(!shown.contains(value), "{shown}");
        }
    }
}
