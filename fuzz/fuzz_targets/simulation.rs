//! A simulation request (`POST /v1/simulate`): validation, then (when valid, with at most 200
//! events) the run through the engine and the answer's view.
//!
//! Input: JSON text, or bytes decoded structurally (see `journeyd_fuzz::values`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [doc] = journeyd_fuzz::values(data);
    journeyd_fuzz::print(&[&doc]);
    journeyd::fuzz_support::simulation(&doc);
});
