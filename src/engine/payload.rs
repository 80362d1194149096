//! Delivery payloads (SPEC §5): the default Segment `track` message of a send step, and the
//! `mapping` templates that reshape it.

use serde_json::{Map, Value, json};

use super::{Instance, ProfileState};
use crate::clock::Timestamp;

/// The default payload: a `track` message carrying the journey context, the journey metadata and
/// the selected traits as read from the profile now.
pub(crate) fn default_payload(
    profile: &ProfileState,
    inst: &Instance,
    step_id: &str,
    event_name: &str,
    traits: &[String],
    delivery_id: &str,
    at: i64,
) -> Value {
    let mut properties = Map::new();
    properties.insert(
        "journey_context".into(),
        Value::Object(inst.context.clone()),
    );
    properties.insert(
        "journey_metadata".into(),
        json!({
            "journey_id": inst.journey_id,
            "journey_version": inst.version,
            "instance_id": inst.id.to_string(),
            "step_id": step_id,
        }),
    );
    let all = traits.iter().any(|t| t == "*");
    for (name, value) in &profile.traits {
        if all || traits.iter().any(|t| t == name) {
            properties.insert(name.clone(), value.clone());
        }
    }
    let id_field = if profile.anonymous {
        "anonymousId"
    } else {
        "userId"
    };
    json!({
        "type": "track",
        "event": event_name,
        id_field: profile.key,
        "messageId": delivery_id,
        "timestamp": Timestamp(at),
        "properties": Value::Object(properties),
    })
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
