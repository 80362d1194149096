//! A `POST /v1/batch` body, raw bytes as received (not compressed).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    journeyd::fuzz_support::ingest(data, true, false);
});
