//! Any `NextPage` value: an integer offset or an error, and a host other than the one
//! called is only ever reported, never used.
#![no_main]

use libfuzzer_sys::fuzz_target;
use triplink_shared::concur::next_page_offset;
use url::Url;

fuzz_target!(|data: &[u8]| {
    let next = String::from_utf8_lossy(data);
    let called = match Url::parse(
        "https://us.api.concursolutions.com/api/v3.2/common/connectionrequests?limit=10",
    ) {
        Ok(url) => url,
        Err(_) => return,
    };
    if let Ok(page) = next_page_offset(&called, &next, true) {
        assert!(page.offset.parse::<u32>().is_ok(), "{page:?}");
    }
});
