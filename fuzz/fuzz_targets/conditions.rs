//! Conditions evaluated against a message or a split's root: the journey's entry, exit and split
//! conditions are parsed, then evaluated against the second value.
//!
//! Input: two JSON values (or bytes decoded structurally, see `journeyd_fuzz::values`): a journey
//! and the root. When the first value is an array rather than a journey, it is taken as a `where`
//! list and put in two small journeys, one with it as the entry and exit conditions and one with
//! it as a split branch's conditions, so that the fuzzer need not build a whole valid journey to
//! reach evaluation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let [first, root] = journeyd_fuzz::values(data);
    let journeys = match &first {
        Value::Array(_) => vec![
            json!({
                "id": "fuzz",
                "entry": {"event": "E", "where": first},
                "exit": {"events": [{"event": "X", "where": first}]},
                "steps": [{"id": "s", "type": "delay", "duration": "1m"}]
            }),
            json!({
                "id": "fuzz",
                "entry": {"event": "E"},
                "steps": [{
                    "id": "s",
                    "type": "split",
                    "branches": [{"name": "b", "where": first, "next": null}],
                    "else": null
                }]
            }),
        ],
        journey => vec![journey.clone()],
    };
    for journey in &journeys {
        journeyd_fuzz::print(&[journey, &root]);
        journeyd::fuzz_support::conditions(journey, &root);
    }
});
