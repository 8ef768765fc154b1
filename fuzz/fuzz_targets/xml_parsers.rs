//! Any body as a Concur XML answer: a collection, one request, an error body, a create
//! answer. Refusals are errors, never panics; what is read goes through the model.
#![no_main]

use libfuzzer_sys::fuzz_target;
use triplink_shared::model::{xml, ConnectionRequest, ConnectionRequestPage};

fuzz_target!(|data: &[u8]| {
    let body = String::from_utf8_lossy(data);
    if let Ok(wire) = xml::parse_collection(&body) {
        let _ = ConnectionRequestPage::from_wire(wire);
    }
    if let Ok(wire) = xml::parse_request(&body) {
        let _ = ConnectionRequest::from_wire(wire);
    }
    let _ = xml::parse_error_body(&body);
    let _ = xml::parse_create_response(&body);
});
