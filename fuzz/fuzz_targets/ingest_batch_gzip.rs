//! A `POST /v1/batch` body sent with `Content-Encoding: gzip`: the bytes are the compressed body
//! (gunzip with its size limit, then the batch parser).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    journeyd::fuzz_support::ingest(data, true, true);
});
