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
    if let Ok(mut d) = crate::delivery::parse(doc) {
        // As the API does before storing: a masked value stands for a stored one, and with
        // nothing stored the API refuses the document (422).
        if d.destination.unmask(&serde_json::Map::new()).is_err() {
            return;
        }
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

#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::path::Path;

    use serde_json::Value;

    /// The fuzz targets in `fuzz/fuzz_targets/`, each with the entry point above it runs.
    const TARGETS: [&str; 8] = [
        "ingest_single",
        "ingest_batch",
        "ingest_batch_gzip",
        "journey",
        "destination",
        "simulation",
        "conditions",
        "mapping",
    ];

    /// The first `N` values of a JSON text stream (`{"a": 1} {"b": 2}`).
    fn json_values<const N: usize>(data: &[u8]) -> [Value; N] {
        let values: Vec<Value> = serde_json::Deserializer::from_slice(data)
            .into_iter::<Value>()
            .take(N)
            .collect::<Result<_, _>>()
            .expect("the input of a JSON target is JSON text");
        values
            .try_into()
            .unwrap_or_else(|v: Vec<Value>| panic!("expected {N} JSON values, found {}", v.len()))
    }

    fn replay(target: &str, data: &[u8]) {
        match target {
            "ingest_single" => super::ingest(data, false, false),
            "ingest_batch" => super::ingest(data, true, false),
            "ingest_batch_gzip" => super::ingest(data, true, true),
            "journey" => super::journey(&json_values::<1>(data)[0]),
            "destination" => super::destination(&json_values::<1>(data)[0]),
            "simulation" => super::simulation(&json_values::<1>(data)[0]),
            "conditions" => {
                let [journey, root] = json_values(data);
                super::conditions(&journey, &root);
            }
            "mapping" => {
                let [template, payload] = json_values(data);
                super::mapping(&template, &payload);
            }
            other => panic!("no fuzz target is named {other}"),
        }
    }

    /// Every file under `fuzz/regressions/<target>/` goes through that target's entry point, as
    /// the fuzz target feeds it: raw bytes for the ingest targets, JSON text for the others (two
    /// values one after the other for `conditions` and `mapping`). These are the inputs the
    /// fuzzers crashed on, minimized, and edge cases kept on purpose (see fuzz/README.md). Each
    /// target has at least one.
    #[test]
    fn fuzz_regressions_do_not_panic() {
        let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/regressions"));
        let mut failed = Vec::new();
        for target in TARGETS {
            let mut files: Vec<_> = std::fs::read_dir(root.join(target))
                .unwrap_or_else(|e| panic!("fuzz/regressions/{target}: {e}"))
                .map(|entry| entry.expect("a directory entry").path())
                .collect();
            files.sort();
            assert!(!files.is_empty(), "fuzz/regressions/{target} is empty");
            for file in files {
                let data = std::fs::read(&file).expect("a regression input");
                if catch_unwind(AssertUnwindSafe(|| replay(target, &data))).is_err() {
                    failed.push(file.display().to_string());
                }
            }
        }
        for dir in std::fs::read_dir(root).expect("fuzz/regressions") {
            let name = dir.expect("a directory entry").file_name();
            let name = name.to_string_lossy();
            assert!(
                TARGETS.contains(&name.as_ref()),
                "fuzz/regressions/{name}: no fuzz target has this name"
            );
        }
        assert!(failed.is_empty(), "these inputs panicked: {failed:#?}");
    }
}
