//! Every example payload of the reference pages, parsed into the model, field by field.

use chrono::{TimeZone, Utc};
use triplink_shared::model::{
    json, xml, ConnectionRequest, ConnectionRequestPage, ConnectionStatus,
};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

#[test]
fn v32_list_xml_example() {
    let page =
        ConnectionRequestPage::from_wire(xml::parse_collection(&fixture("v32_list.xml")).unwrap());
    assert_eq!(page.items.len(), 2);
    assert_eq!(
        page.next_page.as_deref(),
        Some("https://us.concursolutions.com/api/v3.2/common/connectionrequests/?limit=2&offset=2")
    );
    let first = &page.items[0];
    // The page's URI for this item names another id ("44f5142-..."): the ID field wins.
    assert_eq!(first.id, "444f5142-2e5a-4ab9-9aad-da916af6fcd7");
    assert!(first
        .uri
        .as_deref()
        .unwrap()
        .ends_with("/44f5142-2e5a-4ab9-9aad-da916af6fcd7"));
    assert_eq!(first.first_name.as_deref(), Some("First"));
    assert_eq!(first.middle_name, None);
    assert_eq!(first.last_name.as_deref(), Some("Last"));
    assert_eq!(first.loyalty_number.as_deref(), Some("1234"));
    assert_eq!(first.status, Some(ConnectionStatus::Pending));
    assert_eq!(first.request_token_secret(), Some("token-string"));
    assert_eq!(first.last_modified, Some(at(2022, 11, 2, 9, 39, 21)));
    assert_eq!(
        first.emails,
        [
            "example1@example.com",
            "example2@example.com",
            "example3@example.com"
        ]
    );
    assert_eq!(
        first.user_id.as_deref(),
        Some("b244a439-a082-4405-b0d7-2e61ebf9e29c")
    );
    let second = &page.items[1];
    assert_eq!(second.id, "5d2804fb-111b-44a8-98bb-56e387875aed");
    assert_eq!(second.first_name.as_deref(), Some("First2"));
    assert_eq!(second.last_name.as_deref(), Some("Last2"));
    assert_eq!(second.loyalty_number.as_deref(), Some("4321"));
    assert_eq!(second.emails, ["example@example.com"]);
    assert_eq!(second.last_modified, Some(at(2022, 11, 9, 5, 57, 29)));
    assert_eq!(
        second.user_id.as_deref(),
        Some("eb3f9170-0fb8-47b4-9c4c-8fd19dfddb8f")
    );
}

#[test]
fn v32_list_json_example() {
    let page = ConnectionRequestPage::from_wire(
        json::parse_collection(&fixture("v32_list.json")).unwrap(),
    );
    assert_eq!(page.items.len(), 2);
    assert_eq!(
        page.next_page.as_deref(),
        Some("https://integration.concursolutions.com/api/v3.2/common/connectionrequests/?limit=2&offset=4")
    );
    let first = &page.items[0];
    assert_eq!(first.id, "e8a3c057-bb9b-421e-85fb-06777bce54d3");
    assert_eq!(first.first_name.as_deref(), Some("FirstName"));
    assert_eq!(first.middle_name, None);
    assert_eq!(first.last_name.as_deref(), Some("LastName"));
    assert_eq!(
        first.loyalty_number.as_deref(),
        Some("0123"),
        "leading zero kept"
    );
    assert_eq!(first.status, Some(ConnectionStatus::Pending));
    assert_eq!(first.request_token_secret(), Some("token-string"));
    assert_eq!(first.last_modified, Some(at(2022, 11, 9, 5, 57, 29)));
    assert!(first.emails.is_empty());
    assert_eq!(
        first.user_id.as_deref(),
        Some("71ff9cf8-0593-4620-ba6c-145509164ba0")
    );
    assert_eq!(
        first.uri.as_deref(),
        Some("https://integration.concursolutions.com/api/v3.2/common/connectionrequests/e8a3c057-bb9b-421e-85fb-06777bce54d3")
    );
    let second = &page.items[1];
    assert_eq!(second.id, "3357c50d-2cac-4123-9f7e-9ad41166484e");
    assert_eq!(second.first_name.as_deref(), Some("Example"));
    assert_eq!(second.loyalty_number.as_deref(), Some("54321"));
    assert_eq!(
        second.user_id.as_deref(),
        Some("7dcd5a6e-1f26-49b3-a7a6-7374618ac519")
    );
}

fn assert_v32_get(request: &ConnectionRequest) {
    assert_eq!(request.id, "b65b5215-dd36-43d0-a178-39356630320e");
    assert_eq!(request.first_name.as_deref(), Some("First"));
    assert_eq!(request.middle_name, None);
    assert_eq!(request.last_name.as_deref(), Some("Last"));
    assert_eq!(request.loyalty_number.as_deref(), Some("1234"));
    assert_eq!(request.status, Some(ConnectionStatus::Pending));
    assert_eq!(request.request_token_secret(), Some("token-string"));
    assert_eq!(request.last_modified, Some(at(2022, 11, 17, 9, 0, 25)));
    assert_eq!(request.emails, ["example@example.com"]);
    assert_eq!(
        request.user_id.as_deref(),
        Some("4c816ce0-ea35-4664-8937-0c2952dfc742")
    );
    assert_eq!(
        request.uri.as_deref(),
        Some("https://us.concursolutions.com/api/v3.2/common/connectionrequests/b65b5215-dd36-43d0-a178-39356630320e")
    );
}

#[test]
fn v32_get_examples_xml_and_json_agree() {
    let from_xml =
        ConnectionRequest::from_wire(xml::parse_request(&fixture("v32_get.xml")).unwrap()).unwrap();
    let from_json =
        ConnectionRequest::from_wire(json::parse_request(&fixture("v32_get.json")).unwrap())
            .unwrap();
    assert_v32_get(&from_xml);
    assert_v32_get(&from_json);
}

fn assert_maria_smith(request: &ConnectionRequest) {
    assert_eq!(request.id, "nVkXk0j3Yzk4LosUofRwPOvndJDo");
    assert_eq!(request.first_name.as_deref(), Some("Maria"));
    assert_eq!(request.middle_name, None, "<MiddleName /> is absent");
    assert_eq!(request.last_name.as_deref(), Some("Smith"));
    assert_eq!(request.loyalty_number.as_deref(), Some("23242526"));
    assert_eq!(
        request.request_token_secret(),
        Some("EPCYxQ1NRMTstK61XmbdZp7effas271")
    );
    assert_eq!(request.last_modified, Some(at(2014, 4, 29, 23, 19, 3)));
    assert_eq!(request.message, None);
    assert_eq!(request.user_id, None, "v3.0 has no userId");
    assert!(request.emails.is_empty(), "v3.0 has no e-mails");
}

#[test]
fn v30_list_xml_example_is_a_collection_of_one() {
    let page =
        ConnectionRequestPage::from_wire(xml::parse_collection(&fixture("v30_list.xml")).unwrap());
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.next_page, None);
    let request = &page.items[0];
    assert_maria_smith(request);
    assert_eq!(
        request.status,
        Some(ConnectionStatus::Pending),
        "`pending` read case-insensitively"
    );
    assert_eq!(request.discount_code, None, "xsi:nil");
    assert_eq!(
        request.uri.as_deref(),
        Some("https://www.concursolutions.com/api/v3.0/common/connectionrequests/nVkXk0j3Yzk4LosUofRwPOvndJDo")
    );
}

#[test]
fn v30_put_examples_carry_their_status() {
    for (file, status) in [
        ("v30_put_crsuc.xml", ConnectionStatus::Connected),
        ("v30_put_creu1.xml", ConnectionStatus::AccountNotFound),
        ("v30_put_crret.xml", ConnectionStatus::Retry),
    ] {
        let request =
            ConnectionRequest::from_wire(xml::parse_request(&fixture(file)).unwrap()).unwrap();
        assert_maria_smith(&request);
        assert_eq!(request.status, Some(status), "{file}");
        // Examples 8 and 9 put a space before the URI; it is trimmed.
        assert!(request
            .uri
            .as_deref()
            .unwrap()
            .starts_with("https://www.concursolutions.com/"));
    }
}

/// Written from the v3.1 schema table (the pages give no v3.1 example).
#[test]
fn v31_json_pascal_case_with_email_addresses() {
    let page = ConnectionRequestPage::from_wire(
        json::parse_collection(&fixture("v31_list.json")).unwrap(),
    );
    assert_eq!(page.items.len(), 1);
    let request = &page.items[0];
    assert_eq!(request.id, "31-a");
    assert_eq!(request.first_name.as_deref(), Some("Anna"));
    assert_eq!(request.last_name.as_deref(), Some("Lindqvist"));
    assert_eq!(request.loyalty_number.as_deref(), Some("88001234"));
    assert_eq!(request.status, Some(ConnectionStatus::Pending));
    assert_eq!(request.request_token_secret(), Some("rt-31-a"));
    assert_eq!(request.emails, ["anna@example.com", "anna.l@example.org"]);
    assert_eq!(request.last_modified, Some(at(2019, 6, 1, 8, 0, 0)));
    assert!(page.next_page.as_deref().unwrap().ends_with("offset=1"));
}

/// Written from the v3.0 schema table (the pages give no v3.0 JSON example).
#[test]
fn v30_json_pascal_case_with_discount_code() {
    let request =
        ConnectionRequest::from_wire(json::parse_request(&fixture("v30_get.json")).unwrap())
            .unwrap();
    assert_maria_smith(&request);
    assert_eq!(request.discount_code.as_deref(), Some("DC-10"));
    assert_eq!(request.status, Some(ConnectionStatus::Pending));
}
