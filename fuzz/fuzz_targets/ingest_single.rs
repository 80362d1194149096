//! A single-call ingest body (`POST /v1/track` and the other call types), raw bytes as received.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    journeyd::fuzz_support::ingest(data, false, false);
});
