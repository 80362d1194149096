//! The toolkit every validator uses (journeys, destinations, simulation requests): read a JSON
//! document field by field, and collect every [`Problem`] with its JSON pointer instead of
//! stopping at the first. Pure.
//!
//! Validators are hand-written over `serde_json::Value` rather than derived with serde because
//! serde stops at the first error and reports it without a usable path, while `journeyd check`
//! and the API must list every problem at once. Each reader reports what is wrong and returns
//! `None` (or a placeholder), so validation carries on past a problem; any problem turns the
//! result into `Err`.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

/// One validation problem: where (a JSON pointer into the document) and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Problem {
    /// A JSON pointer such as `/steps/1/branches/0/next`; `""` is the whole document.
    pub(crate) path: String,
    pub(crate) message: String,
}

impl Problem {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The same problem inside a larger document, under `prefix` (`/journey`).
    pub(crate) fn under(self, prefix: &str) -> Problem {
        Problem {
            path: format!("{prefix}{}", self.path),
            message: self.message,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.message)
    }
}

/// A JSON object being read, with its pointer for messages.
pub(crate) struct Fields<'a> {
    pub(crate) map: &'a Map<String, Value>,
    pub(crate) path: String,
}

impl<'a> Fields<'a> {
    /// The value of an optional field. JSON `null` counts as absent, as serde's `Option` would
    /// have it.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }
}

/// Collects problems while a document is read.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    pub(crate) problems: Vec<Problem>,
}

impl Checker {
    pub(crate) fn report(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    pub(crate) fn wrong_type(&mut self, path: &str, expected: &str, got: &Value) {
        self.report(path, format!("expected {expected}, got {}", describe(got)));
    }

    /// `Ok(value)` when nothing was reported, else every problem.
    pub(crate) fn finish<T>(self, value: Option<T>) -> Result<T, Vec<Problem>> {
        match value {
            Some(v) if self.problems.is_empty() => Ok(v),
            _ => Err(self.problems),
        }
    }

    /// Reads an object and reports every key not in `allowed`: a typo such as `nxt` must not
    /// silently turn into "completes here".
    pub(crate) fn fields<'a>(
        &mut self,
        value: &'a Value,
        path: &str,
        allowed: &[&str],
    ) -> Option<Fields<'a>> {
        let Value::Object(map) = value else {
            self.wrong_type(path, "an object", value);
            return None;
        };
        for key in map.keys().filter(|key| !allowed.contains(&key.as_str())) {
            self.report(&join(path, key), format!("unknown field \"{key}\""));
        }
        Some(Fields {
            map,
            path: path.to_string(),
        })
    }

    /// A non-empty string at `path`.
    pub(crate) fn string(&mut self, value: &Value, path: &str) -> Option<String> {
        match value {
            Value::String(s) if s.is_empty() => {
                self.report(path, "must not be empty");
                None
            }
            Value::String(s) => Some(s.clone()),
            other => {
                self.wrong_type(path, "a string", other);
                None
            }
        }
    }

    /// The value of a required field. Here `null` is a value (of the wrong type), not absence,
    /// so the message says what the field holds.
    pub(crate) fn required<'a>(&mut self, f: &Fields<'a>, key: &str) -> Option<&'a Value> {
        let value = f.map.get(key);
        if value.is_none() {
            self.report(&f.path(key), format!("missing field \"{key}\""));
        }
        value
    }

    pub(crate) fn required_string(&mut self, f: &Fields, key: &str) -> Option<String> {
        let value = self.required(f, key)?;
        self.string(value, &f.path(key))
    }

    pub(crate) fn optional_string(&mut self, f: &Fields, key: &str) -> Option<String> {
        f.get(key)
            .and_then(|value| self.string(value, &f.path(key)))
    }

    pub(crate) fn optional_bool(&mut self, f: &Fields, key: &str) -> Option<bool> {
        match f.get(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                self.wrong_type(&f.path(key), "a boolean", other);
                None
            }
        }
    }

    /// An optional object field.
    pub(crate) fn optional_object<'a>(
        &mut self,
        f: &Fields<'a>,
        key: &str,
    ) -> Option<&'a Map<String, Value>> {
        match f.get(key)? {
            Value::Object(m) => Some(m),
            other => {
                self.wrong_type(&f.path(key), "an object", other);
                None
            }
        }
    }

    /// An array field; `required` decides whether absence is a problem.
    pub(crate) fn array<'a>(
        &mut self,
        f: &Fields<'a>,
        key: &str,
        required: bool,
    ) -> Option<&'a Vec<Value>> {
        let value = if required {
            self.required(f, key)?
        } else {
            f.get(key)?
        };
        match value {
            Value::Array(items) => Some(items),
            other => {
                self.wrong_type(&f.path(key), "an array", other);
                None
            }
        }
    }

    /// An optional whole number within `range`.
    pub(crate) fn optional_integer(
        &mut self,
        f: &Fields,
        key: &str,
        range: std::ops::RangeInclusive<u64>,
    ) -> Option<u64> {
        let value = f.get(key)?;
        match value.as_u64() {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                self.report(
                    &f.path(key),
                    format!(
                        "expected an integer from {} to {}, got {value}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    /// A duration field (`"90m"`) in milliseconds, within `range` (its bounds are named in the
    /// message as `shown`).
    pub(crate) fn duration(
        &mut self,
        f: &Fields,
        key: &str,
        required: bool,
        range: std::ops::RangeInclusive<u64>,
        shown: &str,
    ) -> Option<u64> {
        let path = f.path(key);
        let value = if required {
            self.required(f, key)?
        } else {
            f.get(key)?
        };
        let Value::String(text) = value else {
            self.wrong_type(&path, "a duration string such as \"90m\"", value);
            return None;
        };
        match crate::journey::parse_duration(text) {
            None => {
                self.report(&path, format!("bad duration \"{text}\""));
                None
            }
            Some(ms) if !range.contains(&ms) => {
                self.report(
                    &path,
                    format!("duration \"{text}\" is out of range ({shown})"),
                );
                None
            }
            Some(ms) => Some(ms),
        }
    }
}

/// Appends `key` to a JSON pointer, escaping it as RFC 6901 asks (`~` as `~0`, `/` as `~1`).
pub(crate) fn join(base: &str, key: &str) -> String {
    format!("{base}/{}", key.replace('~', "~0").replace('/', "~1"))
}

/// A JSON value's type, for "expected a string, got a number".
pub(crate) fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
