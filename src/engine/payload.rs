//! Delivery payloads (SPEC §5): the default Segment `track` message of a send step, and the
//! `mapping` templates that reshape it.

use serde_json::{Map, Value};

use super::{Instance, ProfileState};
use crate::clock::Timestamp;

/// The default payload, as JSON text: a `track` message carrying the journey context, the
/// journey metadata and the selected traits as read from the profile now. Written directly rather
/// than built as a `serde_json::Value` and serialised (the writer makes one per timer fired or
/// event forwarded), and the same bytes: keys in the order serde_json's maps keep them. The
/// context goes in as `inst.context_text`, which the caller sets (as stored, or serialised once
/// for this send and the instance's own row).
pub(crate) fn default_payload(
    profile: &ProfileState,
    inst: &Instance,
    step_id: &str,
    event_name: &str,
    traits: &[String],
    delivery_id: &str,
    at: i64,
) -> String {
    enum Property<'a> {
        Context,
        Metadata,
        Trait(&'a Value),
    }
    let context = inst
        .context_text
        .as_deref()
        .expect("the caller sets the context's text");
    // The properties in the map's key order; a selected trait named like one of the journey's
    // two keys takes its place, as it does when inserted into the map after them.
    let all = traits.iter().any(|t| t == "*");
    let mut properties: Vec<(&str, Property)> = profile
        .traits
        .iter()
        .filter(|(name, _)| all || traits.iter().any(|t| t == *name))
        .map(|(name, value)| (name.as_str(), Property::Trait(value)))
        .collect();
    for (key, property) in [
        ("journey_context", Property::Context),
        ("journey_metadata", Property::Metadata),
    ] {
        if let Err(at) = properties.binary_search_by(|(k, _)| (*k).cmp(key)) {
            properties.insert(at, (key, property));
        }
    }

    let mut out = Vec::with_capacity(context.len() + 320);
    // The top-level keys in order: anonymousId, event, messageId, properties, timestamp, type,
    // userId.
    out.push(b'{');
    if profile.anonymous {
        key(&mut out, "anonymousId");
        json(&mut out, profile.key.as_str());
        out.push(b',');
    }
    key(&mut out, "event");
    json(&mut out, event_name);
    out.push(b',');
    key(&mut out, "messageId");
    json(&mut out, delivery_id);
    out.extend_from_slice(b",\"properties\":{");
    for (n, (name, property)) in properties.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        key(&mut out, name);
        match property {
            Property::Context => out.extend_from_slice(context.as_bytes()),
            Property::Metadata => {
                key_first(&mut out, "instance_id");
                json(&mut out, &inst.id.to_string());
                out.push(b',');
                key(&mut out, "journey_id");
                json(&mut out, &inst.journey_id);
                out.push(b',');
                key(&mut out, "journey_version");
                json(&mut out, &inst.version);
                out.push(b',');
                key(&mut out, "step_id");
                json(&mut out, step_id);
                out.push(b'}');
            }
            Property::Trait(value) => json(&mut out, value),
        }
    }
    out.extend_from_slice(b"},");
    key(&mut out, "timestamp");
    json(&mut out, &Timestamp(at));
    out.extend_from_slice(b",\"type\":\"track\"");
    if !profile.anonymous {
        out.push(b',');
        key(&mut out, "userId");
        json(&mut out, profile.key.as_str());
    }
    out.push(b'}');
    String::from_utf8(out).expect("JSON text is UTF-8")
}

/// Writes `value` as JSON.
fn json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(&mut *out, value).expect("writing to memory");
}

/// Writes `"name":`.
fn key(out: &mut Vec<u8>, name: &str) {
    json(out, name);
    out.push(b':');
}

/// Writes `{"name":`, the first key of an object.
fn key_first(out: &mut Vec<u8>, name: &str) {
    out.push(b'{');
    key(out, name);
}

/// Renders a `mapping` template against the default payload: `{"@path": "$.a.b"}` becomes the
/// value at that path (the key is left out when there is none), `{"@template": "Hi {{a.b}}"}`
/// the rendered string; everything else is copied, recursively.
pub(crate) fn render_mapping(template: &Value, payload: &Value) -> Value {
    render(template, payload).unwrap_or(Value::Null)
}

fn render(template: &Value, payload: &Value) -> Option<Value> {
    match template {
        Value::Object(map) if map.len() == 1 && map.contains_key("@path") => {
            let path = map["@path"].as_str()?;
            lookup(payload, path).cloned()
        }
        Value::Object(map) if map.len() == 1 && map.contains_key("@template") => {
            let text = map["@template"].as_str()?;
            Some(Value::String(fill(text, payload)))
        }
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                if let Some(v) = render(v, payload) {
                    out.insert(k.clone(), v);
                }
            }
            Some(Value::Object(out))
        }
        Value::Array(items) => Some(Value::Array(
            items
                .iter()
                .map(|v| render(v, payload).unwrap_or(Value::Null))
                .collect(),
        )),
        other => Some(other.clone()),
    }
}

/// Looks up `$.a.b.0` (or `a.b.0`) in `root`.
fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.strip_prefix('$').unwrap_or(path);
    let path = path.strip_prefix('.').unwrap_or(path);
    if path.is_empty() {
        return Some(root);
    }
    path.split('.').try_fold(root, |v, seg| match v {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// Replaces each `{{path}}` with the value there: strings as they are, other values as JSON,
/// absent values as nothing.
fn fill(text: &str, payload: &Value) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        match lookup(payload, after[..end].trim()) {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Null) | None => {}
            Some(v) => out.push_str(&v.to_string()),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::engine::State;

    /// The default payload as SPEC §5 gives it, in canonical JSON (the bytes serialising its
    /// value gives: keys in serde_json's map order, nothing between tokens), whichever id field,
    /// traits selected (all, some, none, one named like a journey key) and strings to escape.
    #[test]
    fn the_default_payload_is_canonical_json_of_the_spec_shape() {
        let context = json!({
            "Cart Viewed": {"cart_id": "c\"1\\", "items": [1, 2.5, {"n": null}], "é": "ü\u{7f}\n"},
            "a": true,
        });
        let traits = json!({
            "email": "ada@example.com", "age": 36, "journey_context": "a trait", "zz": [1],
            "Journey": {"x": 1}, "journey_m": false,
        });
        let metadata = json!({"journey_id": "cart \"abandonment\"", "journey_version": 3,
                              "instance_id": "1838080000000123", "step_id": "send"});
        let inst = Instance {
            id: 1_838_080_000_000_123,
            journey_id: "cart \"abandonment\"".into(),
            version: 3,
            state: State::Active,
            step: None,
            unique_value: None,
            context: serde_json::from_value(context.clone()).unwrap(),
            resets: 0,
            due_at: None,
            entered_at: 0,
            ordinal: 1,
            dirty: false,
            context_changed: false,
            context_text: Some(context.to_string()),
        };
        for anonymous in [false, true] {
            let profile = ProfileState {
                key: "u\"1".into(),
                anonymous,
                traits: serde_json::from_value(traits.clone()).unwrap(),
                instances: Vec::new(),
                memory: Default::default(),
            };
            for (selected, properties) in [
                (
                    vec![],
                    json!({"journey_context": context, "journey_metadata": metadata}),
                ),
                (
                    vec!["*".to_string()],
                    json!({"journey_context": "a trait", "journey_metadata": metadata,
                           "email": "ada@example.com", "age": 36, "zz": [1], "Journey": {"x": 1},
                           "journey_m": false}),
                ),
                (
                    vec!["email".into(), "zz".into(), "missing".into()],
                    json!({"journey_context": context, "journey_metadata": metadata,
                           "email": "ada@example.com", "zz": [1]}),
                ),
                (
                    vec!["journey_context".into(), "Journey".into()],
                    json!({"journey_context": "a trait", "journey_metadata": metadata,
                           "Journey": {"x": 1}}),
                ),
            ] {
                let text = default_payload(
                    &profile,
                    &inst,
                    "send",
                    "Cart Reminder",
                    &selected,
                    "d-1",
                    90_061_001,
                );
                let value: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(text, value.to_string(), "not canonical: {selected:?}");
                let id_field = if anonymous { "anonymousId" } else { "userId" };
                let expected = json!({
                    "type": "track", "event": "Cart Reminder", id_field: "u\"1",
                    "messageId": "d-1", "timestamp": "1970-01-02T01:01:01.001Z",
                    "properties": properties,
                });
                assert_eq!(value, expected, "{selected:?}");
            }
        }
    }

    #[test]
    fn mapping_paths_and_templates() {
        let payload =
            json!({"event": "E", "properties": {"email": "a@b", "first_name": "Ada", "n": 3}});
        let template = json!({
            "to": {"@path": "$.properties.email"},
            "missing": {"@path": "$.properties.nope"},
            "greeting": {"@template": "Hi {{properties.first_name}}, {{properties.n}} items{{properties.nope}}"},
            "fixed": [1, {"k": {"@path": "$.event"}}],
        });
        assert_eq!(
            render_mapping(&template, &payload),
            json!({"to": "a@b", "greeting": "Hi Ada, 3 items", "fixed": [1, {"k": "E"}]})
        );
    }
}
