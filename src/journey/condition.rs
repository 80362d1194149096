//! Conditions (SPEC §3.1): the `where` lists of entry, exit and hold branches, and the branch tests of a split.
//!
//! This module owns the condition types and their evaluation against a JSON root; parsing them from a
//! journey document lives with the rest of the parser in `parse.rs`, so that all problems are collected
//! in one place. Evaluation never fails: a value that is absent or of the wrong type simply makes the
//! condition false (or true, for the negative operators), because an event that lacks a property must
//! not be able to break a running journey.

use serde_json::Value;

/// One test: a value found at `target`, checked with `op`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Condition {
    pub(crate) target: Target,
    pub(crate) op: Op,
}

/// Where a condition reads its value. Both hold the dot path already split into segments.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Target {
    /// `"property": "a.b"`: a path inside the message's `properties`.
    Property(Vec<String>),
    /// `"path": "context.locale"`: a path from the root the condition is evaluated on
    /// (the message, or for a split the `{"context": .., "traits": ..}` object the engine builds).
    Path(Vec<String>),
}

/// The operator and its operand, exactly one per condition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    Equals(Value),
    NotEquals(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Exists(bool),
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
    Contains(String),
    StartsWith(String),
}

impl Target {
    /// The value this target names in `root`, if there is one. JSON `null` is returned as a value;
    /// the operators decide what null means.
    pub(crate) fn lookup<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        match self {
            Target::Property(segments) => lookup(root.get("properties")?, segments),
            Target::Path(segments) => lookup(root, segments),
        }
    }
}

impl Condition {
    /// Evaluates the condition against `root`: `Property(p)` looks up `root["properties"]` then `p`,
    /// `Path(p)` looks up `p` from `root`.
    pub(crate) fn holds(&self, root: &Value) -> bool {
        let value = self.target.lookup(root);
        match &self.op {
            Op::Equals(expected) => value.is_some_and(|v| same(v, expected)),
            Op::NotEquals(expected) => !value.is_some_and(|v| same(v, expected)),
            Op::In(list) => value.is_some_and(|v| list.iter().any(|item| same(v, item))),
            Op::NotIn(list) => !value.is_some_and(|v| list.iter().any(|item| same(v, item))),
            Op::Exists(wanted) => value.is_some_and(|v| !v.is_null()) == *wanted,
            Op::Gt(bound) => number(value).is_some_and(|n| n > *bound),
            Op::Gte(bound) => number(value).is_some_and(|n| n >= *bound),
            Op::Lt(bound) => number(value).is_some_and(|n| n < *bound),
            Op::Lte(bound) => number(value).is_some_and(|n| n <= *bound),
            Op::Contains(needle) => match value {
                Some(Value::String(s)) => s.contains(needle.as_str()),
                Some(Value::Array(items)) => items.iter().any(|item| item.as_str() == Some(needle)),
                _ => false,
            },
            Op::StartsWith(prefix) => value
                .and_then(Value::as_str)
                .is_some_and(|s| s.starts_with(prefix.as_str())),
        }
    }
}

/// JSON equality, except that numbers compare by value (`10` equals `10.0`: SDKs send either),
/// at any depth.
pub(crate) fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(x), Some(y), _, _) => x == y,
                (_, _, Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// True when every condition holds; an empty list holds, which is what an absent `where` means.
pub(crate) fn all_hold(conditions: &[Condition], root: &Value) -> bool {
    conditions.iter().all(|condition| condition.holds(root))
}

/// Walks `segments` down from `root`: objects by key, arrays by a segment that is an unsigned integer.
pub(crate) fn lookup<'a>(root: &'a Value, segments: &[String]) -> Option<&'a Value> {
    segments
        .iter()
        .try_fold(root, |value, segment| match value {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?),
            _ => None,
        })
}

/// The numeric comparisons apply only to JSON numbers: a numeric string such as `"42"` is not coerced,
/// so a condition means the same thing whatever the sending SDK's habits.
fn number(value: Option<&Value>) -> Option<f64> {
    value.and_then(|v| match v {
        Value::Number(n) => n.as_f64(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prop(path: &str, op: Op) -> Condition {
        Condition {
            target: Target::Property(path.split('.').map(String::from).collect()),
            op,
        }
    }

    fn path(path: &str, op: Op) -> Condition {
        Condition {
            target: Target::Path(path.split('.').map(String::from).collect()),
            op,
        }
    }

    /// One row per case: the condition, and whether it holds on `message`.
    fn check(cases: &[(Condition, bool)]) {
        let message = json!({
            "type": "track",
            "event": "Order",
            "context": {"locale": "en-GB"},
            "properties": {
                "tier": "Premium",
                "total": 120.5,
                "count": 3,
                "count_text": "3",
                "missing": null,
                "tags": ["vip", "beta"],
                "nested": {"a": {"b": true}},
                "items": [{"sku": "X1"}, {"sku": "X2"}],
                "1": "key one"
            }
        });
        for (i, (condition, expected)) in cases.iter().enumerate() {
            assert_eq!(
                condition.holds(&message),
                *expected,
                "case {i}: {condition:?}"
            );
        }
    }

    #[test]
    fn equality_and_membership() {
        check(&[
            (prop("tier", Op::Equals(json!("Premium"))), true),
            (prop("tier", Op::Equals(json!("premium"))), false),
            (prop("count", Op::Equals(json!(3))), true),
            // Numbers compare by value, as SDKs send either form.
            (prop("count", Op::Equals(json!(3.0))), true),
            (prop("total", Op::Equals(json!(120.5))), true),
            (prop("count", Op::NotEquals(json!(3.0))), false),
            (prop("count", Op::In(vec![json!(1), json!(3.0)])), true),
            (prop("count", Op::NotIn(vec![json!(3.0)])), false),
            // A string is never equal to a number.
            (prop("count_text", Op::Equals(json!(3))), false),
            (prop("absent", Op::Equals(json!(null))), false),
            (prop("missing", Op::Equals(json!(null))), true),
            (prop("tags", Op::Equals(json!(["vip", "beta"]))), true),
            (prop("tier", Op::NotEquals(json!("Basic"))), true),
            (prop("tier", Op::NotEquals(json!("Premium"))), false),
            (prop("absent", Op::NotEquals(json!("x"))), true),
            (
                prop("tier", Op::In(vec![json!("Gold"), json!("Premium")])),
                true,
            ),
            (prop("tier", Op::In(vec![json!("Gold")])), false),
            (prop("absent", Op::In(vec![json!(null)])), false),
            (prop("tier", Op::NotIn(vec![json!("Gold")])), true),
            (prop("tier", Op::NotIn(vec![json!("Premium")])), false),
            (prop("absent", Op::NotIn(vec![json!("x")])), true),
        ]);
    }

    #[test]
    fn exists() {
        check(&[
            (prop("tier", Op::Exists(true)), true),
            (prop("tier", Op::Exists(false)), false),
            (prop("absent", Op::Exists(true)), false),
            (prop("absent", Op::Exists(false)), true),
            // A null value counts as not there.
            (prop("missing", Op::Exists(true)), false),
            (prop("missing", Op::Exists(false)), true),
        ]);
    }

    #[test]
    fn numeric_comparisons() {
        check(&[
            (prop("total", Op::Gt(100.0)), true),
            (prop("total", Op::Gt(120.5)), false),
            (prop("total", Op::Gte(120.5)), true),
            (prop("count", Op::Lt(4.0)), true),
            (prop("count", Op::Lt(3.0)), false),
            (prop("count", Op::Lte(3.0)), true),
            // Only JSON numbers compare; strings and absent values never do.
            (prop("count_text", Op::Gt(1.0)), false),
            (prop("absent", Op::Lt(1.0)), false),
            (prop("missing", Op::Lte(1.0)), false),
        ]);
    }

    #[test]
    fn strings_and_arrays() {
        check(&[
            (prop("tier", Op::Contains("emi".into())), true),
            (prop("tier", Op::Contains("Gold".into())), false),
            (prop("tags", Op::Contains("vip".into())), true),
            (prop("tags", Op::Contains("vi".into())), false),
            (prop("count", Op::Contains("3".into())), false),
            (prop("tier", Op::StartsWith("Pre".into())), true),
            (prop("tier", Op::StartsWith("mium".into())), false),
            (prop("tags", Op::StartsWith("vip".into())), false),
            (prop("absent", Op::StartsWith("".into())), false),
        ]);
    }

    #[test]
    fn paths() {
        check(&[
            (prop("nested.a.b", Op::Equals(json!(true))), true),
            (prop("nested.a.c", Op::Exists(false)), true),
            (prop("tier.x", Op::Exists(false)), true),
            // Unsigned integer segments index arrays, and are plain keys in objects.
            (prop("items.1.sku", Op::Equals(json!("X2"))), true),
            (prop("items.2.sku", Op::Exists(false)), true),
            (prop("items.x.sku", Op::Exists(false)), true),
            (prop("tags.0", Op::Equals(json!("vip"))), true),
            (prop("1", Op::Equals(json!("key one"))), true),
            (path("context.locale", Op::StartsWith("en".into())), true),
            (path("properties.tier", Op::Equals(json!("Premium"))), true),
            (path("event", Op::Equals(json!("Order"))), true),
            // A property target never reads outside `properties`.
            (prop("event", Op::Exists(false)), true),
        ]);
    }

    #[test]
    fn lists() {
        let message = json!({"properties": {"a": 1, "b": 2}});
        let both = [prop("a", Op::Equals(json!(1))), prop("b", Op::Gte(2.0))];
        assert!(all_hold(&both, &message));
        assert!(all_hold(&[], &message));
        assert!(!all_hold(
            &[both[0].clone(), prop("b", Op::Lt(2.0))],
            &message
        ));
        // A root without `properties` (a split's context root, say) fails property tests quietly.
        assert!(!prop("a", Op::Exists(true)).holds(&json!({"context": {}})));
    }
}
