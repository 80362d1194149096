//! A journey document (`PUT /v1/journeys/{id}`, `journeyd check`): validation and the graph checks.
//!
//! Input: JSON text, or bytes decoded structurally (see `journeyd_fuzz::values`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [doc] = journeyd_fuzz::values(data);
    journeyd_fuzz::print(&[&doc]);
    journeyd::fuzz_support::journey(&doc);
});
