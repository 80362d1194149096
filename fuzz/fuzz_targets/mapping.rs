//! A send step's `mapping` template rendered against a payload (`@path`, `@template`).
//!
//! Input: two JSON values, the template then the payload (`{"a": {"@path": "$.b"}} {"b": 1}`),
//! or bytes decoded structurally (see `journeyd_fuzz::values`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [template, payload] = journeyd_fuzz::values(data);
    journeyd_fuzz::print(&[&template, &payload]);
    journeyd::fuzz_support::mapping(&template, &payload);
});
