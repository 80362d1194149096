//! What the fuzz targets share: turning the fuzzer's bytes into the JSON documents that the
//! `journeyd::fuzz_support` entry points take.
//!
//! An input that is JSON text (a stream of as many values as the target needs, one after the
//! other, as in `{"a": 1} {"b": 2}`) is used as it parses: that is how the product reads these
//! documents, and the seed corpora are such text. Any other input is not thrown away: it is
//! decoded with `arbitrary` into JSON values built from the words journeyd's documents use (field
//! names, operators, step types, durations, offsets, URLs), so that the fuzzer also explores
//! documents past JSON syntax. Either way the values passed on are ones serde_json could have
//! parsed (nesting well under its recursion limit of 128, finite numbers).
//!
//! With `JOURNEYD_FUZZ_PRINT=1` in the environment, a target prints the values it passes on, as
//! JSON text: that text is what a regression file under `fuzz/regressions/<target>/` holds for
//! the JSON targets (run the target binary on a crashing input to get it).

use arbitrary::Unstructured;
use serde_json::{Map, Number, Value};

/// The first `N` JSON values of `data` when it is a JSON text stream of at least `N` values
/// (anything after them is ignored); otherwise `N` values decoded structurally from the bytes.
pub fn values<const N: usize>(data: &[u8]) -> [Value; N] {
    let parsed: Vec<Value> = serde_json::Deserializer::from_slice(data)
        .into_iter::<Value>()
        .take(N)
        .map_while(Result::ok)
        .collect();
    if let Ok(values) = <[Value; N]>::try_from(parsed) {
        return values;
    }
    let mut u = Unstructured::new(data);
    std::array::from_fn(|_| value(&mut u, MAX_DEPTH).unwrap_or(Value::Null))
}

/// Prints the values a target passes on, when `JOURNEYD_FUZZ_PRINT` is set.
pub fn print(values: &[&Value]) {
    if std::env::var_os("JOURNEYD_FUZZ_PRINT").is_some() {
        for v in values {
            eprintln!("{v}");
        }
    }
}

/// How deep a generated value nests (serde_json parses at most 128 levels).
const MAX_DEPTH: u32 = 12;
/// At most this many items in a generated array or object.
const MAX_ITEMS: usize = 12;

/// Field names of journeys, conditions, steps, destinations, simulations and Segment messages.
const KEYS: &[&str] = &[
    // journey
    "id", "name", "entry", "exit", "steps", "event", "where", "reentry", "unique_by", "events",
    "send", "type", "branches", "max_hold", "on_timeout", "reset_timer", "as", "next", "duration",
    "else", "percent", "sticky", "destination", "event_name", "traits", "mapping",
    // conditions
    "property", "path", "equals", "not_equals", "in", "not_in", "exists", "gt", "gte", "lt", "lte",
    "contains", "starts_with",
    // mapping
    "@path", "@template",
    // destination
    "url", "method", "headers", "secret", "timeout", "max_attempts", "write_key", "rate_limit",
    "concurrency",
    // simulation
    "journey", "at", "message", "start",
    // Segment messages
    "userId", "anonymousId", "previousId", "messageId", "properties", "context", "integrations",
    "timestamp", "sentAt", "writeKey", "batch", "groupId",
];

/// String values those documents use, so that references and enumerations can match.
const STRINGS: &[&str] = &[
    "", "s", "t", "u", "E", "F", "X", "a", "a.b", "0", "1", "fuzz", "crm", "*",
    // step types and enumerations
    "hold_until", "delay", "split", "random_split", "send", "every_time", "if_not_active", "once",
    "webhook", "segment", "POST", "put", "GET",
    // call types
    "track", "identify", "page", "screen", "group", "alias",
    // durations and offsets
    "1s", "90m", "2h", "1d", "365d", "366d", "0s", "+0s", "+90m", "+2h30m", "+1500ms",
    "+15000000w", "+9223372036854775807ms", "1m30s",
    // paths
    "$", "$.", "$.properties.email", "properties.a", "context.E.a", "traits.email", "context.",
    "traits", "$.a.0.b", "a..b", "{{properties.a}}", "Hi {{traits.first_name}}!", "{{", "}}",
    "{{}}",
    // time
    "2026-11-28T10:17:41.908Z", "1970-01-01T00:00:00Z", "+262143-12-31T23:59:59Z",
    "-262144-01-01T00:00:00", "9999-12-31T23:59:59.999+23:59", "0000-01-01T00:00:00-23:59",
    // URLs and headers
    "https://h.example/in", "http://u:pw@h.example:8080/x?a=b@c#f", "https://u:********@h/",
    "https://:@h/", "https://u@h/", "http://[::1]:1/", "X-Api-Key", "Host", "webhook-id",
    "whsec_", "whsec_AAAA", "********", "\u{e9}\u{1F600}", "\r\n",
];

fn value(u: &mut Unstructured, depth: u32) -> arbitrary::Result<Value> {
    let kinds = if depth == 0 { 4 } else { 6 };
    Ok(match u.choose_index(kinds)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => number(u)?,
        3 => Value::String(string(u, STRINGS)?),
        4 => {
            let len = u.int_in_range(0..=MAX_ITEMS)?;
            let mut items = Vec::with_capacity(len);
            for _ in 0..len {
                items.push(value(u, depth - 1)?);
            }
            Value::Array(items)
        }
        _ => {
            let len = u.int_in_range(0..=MAX_ITEMS)?;
            let mut map = Map::new();
            for _ in 0..len {
                let key = string(u, KEYS)?;
                map.insert(key, value(u, depth - 1)?);
            }
            Value::Object(map)
        }
    })
}

/// A word from `words` most of the time, else any string.
fn string(u: &mut Unstructured, words: &[&str]) -> arbitrary::Result<String> {
    if u.ratio(7, 8)? {
        Ok(u.choose(words)?.to_string())
    } else {
        u.arbitrary()
    }
}

fn number(u: &mut Unstructured) -> arbitrary::Result<Value> {
    Ok(match u.choose_index(4)? {
        0 => Value::from(u.int_in_range(-3i64..=120)?),
        1 => Value::from(u.arbitrary::<i64>()?),
        2 => Value::from(u.arbitrary::<u64>()?),
        _ => Number::from_f64(u.arbitrary()?).map_or(Value::from(0.5), Value::Number),
    })
}
