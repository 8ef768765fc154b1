//! Any text as a name: normalisation never panics, is idempotent and stays bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use triplink_shared::matching::{normalize_name, MAX_NAME_CHARS};

fuzz_target!(|data: &[u8]| {
    let name = String::from_utf8_lossy(data);
    let once = normalize_name(&name);
    assert!(once.chars().count() <= MAX_NAME_CHARS);
    assert_eq!(normalize_name(&once), once);
});
