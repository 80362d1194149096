//! A destination document (`PUT /v1/destinations/{id}`): validation, and the masked public form
//! read back and unmasked to the same settings.
//!
//! Input: JSON text, or bytes decoded structurally (see `journeyd_fuzz::values`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [doc] = journeyd_fuzz::values(data);
    journeyd_fuzz::print(&[&doc]);
    journeyd::fuzz_support::destination(&doc);
});
