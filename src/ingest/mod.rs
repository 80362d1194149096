//! Segment messages: parsing, validation and normalisation of what the Tracking API receives
//! (SPEC §2). Pure: the receive time and the generator of message ids are arguments.
//!
//! A request body becomes a list of [`Message`]s, each carrying the identity fields the store
//! needs and the body to store: the client's message with the batch's `context` and
//! `integrations` merged in, `writeKey` removed, and the server fields (`messageId`,
//! `receivedAt`, skew-corrected `timestamp`, `originalTimestamp`) added.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::clock::Timestamp;

/// Most bytes in one message.
pub(crate) const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// Most bytes in one request, after decompression.
pub(crate) const MAX_REQUEST_BYTES: usize = 500 * 1024;
/// How long a messageId is remembered for deduplication (SPEC §2).
pub(crate) const DEDUP_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;
/// Most messages in one batch.
pub(crate) const MAX_BATCH_MESSAGES: usize = 2500;

/// The six Segment call types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallType {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
}

impl CallType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CallType::Track => "track",
            CallType::Identify => "identify",
            CallType::Page => "page",
            CallType::Screen => "screen",
            CallType::Group => "group",
            CallType::Alias => "alias",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<CallType> {
        Some(match s {
            "track" => CallType::Track,
            "identify" => CallType::Identify,
            "page" => CallType::Page,
            "screen" => CallType::Screen,
            "group" => CallType::Group,
            "alias" => CallType::Alias,
            _ => return None,
        })
    }
}

/// What an ingest path accepts: one call of a given type, or a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Single(CallType),
    Batch,
}

/// A validated, normalised message ready to store.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Message {
    /// Its position in the request (a batch's index; 0 for a single call).
    pub(crate) index: usize,
    pub(crate) call: CallType,
    pub(crate) message_id: String,
    pub(crate) user_id: Option<String>,
    pub(crate) anonymous_id: Option<String>,
    /// The `previousId` of an alias call.
    pub(crate) previous_id: Option<String>,
    /// The event name of a track call.
    pub(crate) event: Option<String>,
    pub(crate) received_at: i64,
    /// The skew-corrected event time, unix milliseconds.
    pub(crate) timestamp: i64,
    /// An identify call's `traits`, which the store merges into the profile.
    pub(crate) traits: Option<Map<String, Value>>,
    /// The message as it is stored and shown, serialised on the request's task so the writer
    /// only copies it. While a message waits for the writer this is all it holds of its body,
    /// so queued work costs about its own size in memory.
    pub(crate) json: String,
}

/// Which profile a message belongs to, and which other id it links to that profile (SPEC §2
/// Identity). The store and the simulator both start from this, so they agree on the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity<'a> {
    /// The id the message is keyed by: its `userId`, else its `anonymousId`.
    pub(crate) id: &'a str,
    /// Whether that id is a `userId` (a profile keyed by an anonymousId is anonymous).
    pub(crate) known: bool,
    /// An id to link to the message's profile: an identify's `anonymousId` (with a `userId`),
    /// an alias's `previousId`.
    pub(crate) link: Option<&'a str>,
}

impl Message {
    pub(crate) fn identity(&self) -> Identity<'_> {
        let id = self
            .user_id
            .as_deref()
            .or(self.anonymous_id.as_deref())
            .expect("a validated message has an id");
        let link = match self.call {
            CallType::Identify if self.user_id.is_some() => self.anonymous_id.as_deref(),
            CallType::Alias => self.previous_id.as_deref(),
            _ => None,
        };
        Identity {
            id,
            known: self.user_id.is_some(),
            link: link.filter(|l| *l != id),
        }
    }

    /// The message as stored, as JSON.
    pub(crate) fn body(&self) -> Value {
        serde_json::from_str(&self.json).expect("the message was serialised from JSON")
    }
}

/// A message of a batch that was not accepted, by its index in the batch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reject {
    pub(crate) index: usize,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

/// Why a whole request was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum RequestError {
    #[error("{0}")]
    InvalidJson(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("batch has {0} messages, more than the limit of {MAX_BATCH_MESSAGES}")]
    TooManyMessages(usize),
    #[error("{0}")]
    InvalidMessage(String),
}

impl RequestError {
    pub(crate) fn code(&self) -> &'static str {
        match self {
            RequestError::InvalidJson(_) => "invalid_json",
            RequestError::TooLarge(_) => "too_large",
            RequestError::TooManyMessages(_) => "too_many_messages",
            RequestError::InvalidMessage(_) => "invalid_message",
        }
    }
}

/// A request body, parsed but not yet validated: enough to check the write key first.
pub(crate) struct Parsed<'a> {
    endpoint: Endpoint,
    write_key: Option<String>,
    shape: Shape<'a>,
}

enum Shape<'a> {
    Single(Map<String, Value>),
    Batch(BatchBody<'a>),
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
    #[serde(default)]
    context: Option<Value>,
    #[serde(default)]
    integrations: Option<Value>,
    #[serde(default, rename = "sentAt")]
    sent_at: Option<Value>,
}

impl<'a> Parsed<'a> {
    /// Parses the JSON of a request body (already decompressed).
    pub(crate) fn new(endpoint: Endpoint, body: &'a [u8]) -> Result<Parsed<'a>, RequestError> {
        if body.len() > MAX_REQUEST_BYTES {
            return Err(RequestError::TooLarge(format!(
                "request is {} bytes, more than the limit of {MAX_REQUEST_BYTES}",
                body.len()
            )));
        }
        if let Endpoint::Single(_) = endpoint
            && body.len() > MAX_MESSAGE_BYTES
        {
            return Err(RequestError::TooLarge(format!(
                "message is {} bytes, more than the limit of {MAX_MESSAGE_BYTES}",
                body.len()
            )));
        }
        let bad_json = |e: serde_json::Error| {
            RequestError::InvalidJson(format!("body is not valid JSON: {e}"))
        };
        match endpoint {
            Endpoint::Single(_) => {
                let value: Value = serde_json::from_slice(body).map_err(bad_json)?;
                let Value::Object(mut map) = value else {
                    return Err(RequestError::InvalidMessage(
                        "body must be a JSON object".into(),
                    ));
                };
                let write_key = take_write_key(&mut map);
                Ok(Parsed {
                    endpoint,
                    write_key,
                    shape: Shape::Single(map),
                })
            }
            Endpoint::Batch => {
                // Read the write key without building the messages: they are parsed one by one
                // later, which is also how each message's own size is known.
                #[derive(Deserialize)]
                struct Key {
                    #[serde(default, rename = "writeKey")]
                    write_key: Option<Value>,
                }
                let value: &RawValue = serde_json::from_slice(body).map_err(bad_json)?;
                if !value.get().trim_start().starts_with('{') {
                    return Err(RequestError::InvalidMessage(
                        "body must be a JSON object".into(),
                    ));
                }
                let key: Key = serde_json::from_str(value.get()).map_err(bad_json)?;
                let batch: BatchBody = serde_json::from_str(value.get()).map_err(|e| {
                    RequestError::InvalidMessage(format!(
                        "a batch needs a \"batch\" array of messages: {e}"
                    ))
                })?;
                if batch.batch.len() > MAX_BATCH_MESSAGES {
                    return Err(RequestError::TooManyMessages(batch.batch.len()));
                }
                let write_key = key.write_key.as_ref().and_then(id_string);
                Ok(Parsed {
                    endpoint,
                    write_key,
                    shape: Shape::Batch(batch),
                })
            }
        }
    }

    /// The `writeKey` the body carries, if any.
    pub(crate) fn write_key(&self) -> Option<&str> {
        self.write_key.as_deref()
    }

    /// Validates and normalises the messages. A single call with a bad message is an error; a
    /// batch keeps its good messages and lists the bad ones.
    pub(crate) fn messages(
        self,
        received_at: i64,
        new_id: &mut dyn FnMut() -> String,
    ) -> Result<(Vec<Message>, Vec<Reject>), RequestError> {
        match (self.endpoint, self.shape) {
            (Endpoint::Single(call), Shape::Single(map)) => {
                let defaults = Defaults {
                    context: None,
                    integrations: None,
                    sent_at: None,
                };
                let m = normalise(map, Some(call), &defaults, received_at, new_id)
                    .map_err(|(_, msg)| RequestError::InvalidMessage(msg))?;
                Ok((vec![m], Vec::new()))
            }
            (_, Shape::Batch(batch)) => {
                let defaults = Defaults {
                    context: batch.context.as_ref().and_then(Value::as_object),
                    integrations: batch.integrations.as_ref().and_then(Value::as_object),
                    sent_at: batch.sent_at.as_ref(),
                };
                let mut messages = Vec::with_capacity(batch.batch.len());
                let mut rejected = Vec::new();
                for (index, raw) in batch.batch.iter().enumerate() {
                    let text = raw.get();
                    if text.len() > MAX_MESSAGE_BYTES {
                        rejected.push(Reject {
                            index,
                            code: "too_large",
                            message: format!(
                                "message is {} bytes, more than the limit of {MAX_MESSAGE_BYTES}",
                                text.len()
                            ),
                        });
                        continue;
                    }
                    let map = match serde_json::from_str::<Value>(text) {
                        Ok(Value::Object(map)) => map,
                        other => {
                            let message = match other {
                                Ok(v) => format!(
                                    "message must be a JSON object, got {}",
                                    crate::validate::describe(&v)
                                ),
                                Err(e) => format!("message is not valid JSON: {e}"),
                            };
                            rejected.push(Reject {
                                index,
                                code: "invalid_message",
                                message,
                            });
                            continue;
                        }
                    };
                    match normalise(map, None, &defaults, received_at, new_id) {
                        Ok(m) => messages.push(Message { index, ..m }),
                        Err((code, message)) => rejected.push(Reject {
                            index,
                            code,
                            message,
                        }),
                    }
                }
                Ok((messages, rejected))
            }
            (Endpoint::Batch, Shape::Single(_)) => {
                unreachable!("a batch endpoint parses a batch shape")
            }
        }
    }
}

/// A message as stored, for a backtest to replay: its call type and event name (columns of the
/// stored row), its JSON, and when it was received. Its ids are not read: the store says which
/// profile it belongs to now.
pub(crate) fn stored(
    call: &str,
    event: Option<String>,
    json: String,
    received_at: i64,
) -> Option<Message> {
    Some(Message {
        index: 0,
        call: CallType::parse(call)?,
        message_id: String::new(),
        user_id: None,
        anonymous_id: None,
        previous_id: None,
        event,
        received_at,
        timestamp: received_at,
        traits: None,
        json,
    })
}

/// Validates and normalises one message as the simulator replays it: as if sent to the path of
/// its `type`, or to `/v1/track` when it has none. The error is the message a client would get.
pub(crate) fn replayed(
    body: Map<String, Value>,
    received_at: i64,
    new_id: &mut dyn FnMut() -> String,
) -> Result<Message, String> {
    let call = (!body.contains_key("type")).then_some(CallType::Track);
    let defaults = Defaults {
        context: None,
        integrations: None,
        sent_at: None,
    };
    normalise(body, call, &defaults, received_at, new_id).map_err(|(_, message)| message)
}

/// Undoes `Content-Encoding: gzip`, keeping to the request size limit after decompression (a
/// small body that inflates past it is refused without inflating the rest).
pub(crate) fn gunzip(raw: &[u8]) -> Result<Vec<u8>, RequestError> {
    use std::io::Read;
    let mut out = Vec::with_capacity((raw.len() * 4).min(MAX_REQUEST_BYTES + 1));
    let mut decoder = flate2::read::MultiGzDecoder::new(raw).take(MAX_REQUEST_BYTES as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(|e| RequestError::InvalidJson(format!("body is not valid gzip: {e}")))?;
    if out.len() > MAX_REQUEST_BYTES {
        return Err(RequestError::TooLarge(format!(
            "request is larger than {MAX_REQUEST_BYTES} bytes once decompressed"
        )));
    }
    Ok(out)
}

fn take_write_key(map: &mut Map<String, Value>) -> Option<String> {
    map.remove("writeKey").as_ref().and_then(id_string)
}

/// An id as Segment accepts it: a non-empty string, or a number (some SDKs send numeric ids).
/// `null` and `""` count as absent.
fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

struct Defaults<'b> {
    context: Option<&'b Map<String, Value>>,
    integrations: Option<&'b Map<String, Value>>,
    sent_at: Option<&'b Value>,
}

type Invalid = (&'static str, String);

fn invalid(message: impl Into<String>) -> Invalid {
    ("invalid_message", message.into())
}

fn normalise(
    mut body: Map<String, Value>,
    call: Option<CallType>,
    defaults: &Defaults,
    received_at: i64,
    new_id: &mut dyn FnMut() -> String,
) -> Result<Message, Invalid> {
    body.remove("writeKey");
    let call = match call {
        Some(call) => call,
        None => match body.get("type") {
            Some(Value::String(t)) => {
                CallType::parse(t).ok_or_else(|| invalid(format!("unknown type \"{t}\"")))?
            }
            Some(_) => return Err(invalid("\"type\" must be a string")),
            None => return Err(invalid("message needs a \"type\"")),
        },
    };
    body.insert("type".into(), Value::String(call.as_str().into()));

    let user_id = body.get("userId").and_then(id_string);
    let anonymous_id = body.get("anonymousId").and_then(id_string);
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(invalid("message needs a \"userId\" or an \"anonymousId\""));
    }
    let event = match call {
        CallType::Track => match body.get("event") {
            Some(Value::String(e)) if !e.is_empty() => Some(e.clone()),
            _ => return Err(invalid("track needs an \"event\" name")),
        },
        _ => None,
    };
    let previous_id = match call {
        CallType::Alias => Some(
            body.get("previousId")
                .and_then(id_string)
                .ok_or_else(|| invalid("alias needs a \"previousId\""))?,
        ),
        _ => None,
    };
    for key in ["properties", "traits", "context", "integrations"] {
        match body.get(key) {
            None | Some(Value::Null) | Some(Value::Object(_)) => {}
            Some(_) => return Err(invalid(format!("\"{key}\" must be an object"))),
        }
    }

    merge_defaults(&mut body, "context", defaults.context);
    merge_defaults(&mut body, "integrations", defaults.integrations);

    let client_ts = match body.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_time_field(v, "timestamp")?),
    };
    let sent_at = match body.get("sentAt").or(defaults.sent_at) {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_time_field(v, "sentAt")?),
    };
    let timestamp = match (client_ts, sent_at) {
        (Some(ts), Some(sent)) => received_at - (sent - ts),
        (Some(ts), None) => ts,
        (None, _) => received_at,
    };
    if client_ts.is_some() {
        let original = body.remove("timestamp").expect("checked above");
        body.insert("originalTimestamp".into(), original);
    }
    body.insert(
        "timestamp".into(),
        Value::String(Timestamp(timestamp).to_string()),
    );
    body.insert(
        "receivedAt".into(),
        Value::String(Timestamp(received_at).to_string()),
    );

    let message_id = match body.get("messageId").and_then(id_string) {
        Some(id) => id,
        None => {
            let id = new_id();
            body.insert("messageId".into(), Value::String(id.clone()));
            id
        }
    };

    let json = serde_json::to_string(&body).expect("a JSON map serialises");
    let traits = match (call, body.remove("traits")) {
        (CallType::Identify, Some(Value::Object(t))) => Some(t),
        _ => None,
    };
    Ok(Message {
        index: 0,
        call,
        message_id,
        user_id,
        anonymous_id,
        previous_id,
        event,
        received_at,
        timestamp,
        traits,
        json,
    })
}

fn parse_time_field(v: &Value, name: &str) -> Result<i64, Invalid> {
    v.as_str()
        .and_then(Timestamp::parse)
        .map(Timestamp::ms)
        .ok_or_else(|| invalid(format!("\"{name}\" must be an ISO 8601 date-time, got {v}")))
}

/// Merges the batch-level object into the message's own: the message's keys win.
fn merge_defaults(body: &mut Map<String, Value>, key: &str, defaults: Option<&Map<String, Value>>) {
    let Some(defaults) = defaults else { return };
    if defaults.is_empty() {
        return;
    }
    match body.get_mut(key) {
        Some(Value::Object(own)) => {
            for (k, v) in defaults {
                own.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        _ => {
            body.insert(key.into(), Value::Object(defaults.clone()));
        }
    }
}

#[cfg(test)]
mod tests;
