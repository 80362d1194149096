//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz): each runs one parser of outside
//! input the way the product runs it, and must never panic, whatever the bytes. Not part of the
//! product's interface.

use serde_json::Value;

use crate::ingest::{Endpoint, Parsed};

/// One ingest request body: a single call (`batch` false) or a batch, optionally gzipped, read
/// as the ingest API reads it.
pub fn ingest(body: &[u8], batch: bool, gzip: bool) {
    let inflated;
    let body = if gzip {
        match crate::ingest::gunzip(body) {
            Ok(b) => {
                inflated = b;
                &inflated[..]
            }
            Err(_) => return,
        }
    } else {
        body
    };
    let endpoint = if batch {
        Endpoint::Batch
    } else {
        Endpoint::Single(crate::ingest::CallType::Track)
    };
    let Ok(parsed) = Parsed::new(endpoint, body) else {
        return;
    };
    let mut n = 0u64;
    let mut new_id = || {
        n += 1;
        format!("fuzz-{n}")
    };
    if let Ok((messages, _)) = parsed.messages(1_795_000_000_000, &mut new_id) {
        for m in messages {
            let _ = m.identity();
            let _ = m.body();
        }
    }
}

/// A journey document, validated as `PUT /v1/journeys` and `journeyd check` do.
pub fn journey(doc: &Value) {
    let _ = crate::journey::parse(doc);
}

/// A destination document, validated as `PUT /v1/destinations` does, with its masking.
pub fn destination(doc: &Value) {
    if let Ok(d) = crate::delivery::parse(doc) {
        let mut shown = crate::delivery::parse(&d.destination.public())
            .expect("the public form of a valid destination is valid")
            .destination;
        shown
            .unmask(&d.destination.hidden())
            .expect("a destination unmasks with its own secrets");
        assert_eq!(shown, d.destination);
    }
}

/// A simulation request, validated and (when valid and small) run as `POST /v1/simulate` does.
pub fn simulation(doc: &Value) {
    if let Ok(input) = crate::sim::parse(doc)
        && input.events.len() <= 200
    {
        let out = crate::sim::run(&input, crate::engine::DEFAULT_MAX_ACTIVE);
        let _ = crate::api::views::simulation(&out);
    }
}

/// The conditions of a journey's entry and exit rules and splits, evaluated against `root`.
pub fn conditions(journey: &Value, root: &Value) {
    if let Ok(j) = crate::journey::parse(journey) {
        let _ = crate::journey::all_hold(&j.entry.conditions, root);
        for e in &j.exit.events {
            let _ = crate::journey::all_hold(&e.conditions, root);
        }
        for step in &j.steps {
            if let crate::journey::StepKind::Split { branches, .. } = &step.kind {
                for b in branches {
                    let _ = crate::journey::all_hold(&b.conditions, root);
                }
            }
        }
    }
}

/// A delivery `mapping` template rendered against a payload.
pub fn mapping(template: &Value, payload: &Value) {
    let _ = crate::engine::render_mapping(template, payload);
}
