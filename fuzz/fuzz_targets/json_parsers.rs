//! Any body as a Concur JSON answer: a collection, one request, an error body, a create
//! answer. Refusals are errors, never panics; what is read goes through the model.
#![no_main]

use libfuzzer_sys::fuzz_target;
use triplink_shared::model::{json, ConnectionRequest, ConnectionRequestPage};

fuzz_target!(|data: &[u8]| {
    let body = String::from_utf8_lossy(data);
    if let Ok(wire) = json::parse_collection(&body) {
        let _ = ConnectionRequestPage::from_wire(wire);
    }
    if let Ok(wire) = json::parse_request(&body) {
        let _ = ConnectionRequest::from_wire(wire);
    }
    let _ = json::parse_error_body(&body);
    let _ = json::parse_create_response(&body);
});
