//! The Segment-compatible Tracking API (SPEC §2): paths, write-key auth, content types, gzip, and
//! the `{"success": ...}` response shapes.

use base64::Engine;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use super::{App, Body, json_response, read_body, unavailable};
use crate::ingest::{CallType, Endpoint, MAX_REQUEST_BYTES, Parsed, Reject, RequestError};
use crate::metrics::{METRICS, label};
use crate::store::{StoreError, hash_secret};

/// The endpoint a `/v1/{name}` path names, browser aliases included.
pub(super) fn endpoint(name: &str) -> Option<Endpoint> {
    Some(match name {
        "track" | "t" => Endpoint::Single(CallType::Track),
        "identify" | "i" => Endpoint::Single(CallType::Identify),
        "page" | "p" => Endpoint::Single(CallType::Page),
        "screen" | "s" => Endpoint::Single(CallType::Screen),
        "group" | "g" => Endpoint::Single(CallType::Group),
        "alias" | "a" => Endpoint::Single(CallType::Alias),
        "batch" | "b" => Endpoint::Batch,
        _ => return None,
    })
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<Body> {
    if status != StatusCode::SERVICE_UNAVAILABLE {
        METRICS
            .events_rejected
            .get_or_create(&label("code", code.to_string()))
            .inc();
    }
    json_response(
        status,
        &json!({"success": false, "code": code, "message": message.into()}),
    )
}

fn request_error(e: RequestError) -> Response<Body> {
    error(StatusCode::BAD_REQUEST, e.code(), e.to_string())
}

pub(super) async fn handle(
    app: &App,
    endpoint: Endpoint,
    req: Request<Incoming>,
) -> Response<Body> {
    let received_at = app.now();
    let headers = req.headers().clone();
    // Content-Type is not checked: SDKs send application/json, browsers text/plain (to avoid a
    // CORS preflight), and `curl -d` application/x-www-form-urlencoded. The body must be JSON
    // whatever the header says, and a body that is not gets a 400.
    let header_key = match basic_user(&headers) {
        Ok(key) => key,
        Err(message) => return error(StatusCode::UNAUTHORIZED, "unauthorized", message),
    };
    if let Some(key) = &header_key
        && !app.keys.read().unwrap().write.contains(&hash_secret(key))
    {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "write key is not valid",
        );
    }

    // The bytes this request may hold while it waits for the writer, reserved before its body is
    // read: memory stays bounded however many clients send at once (SPEC §9).
    let reserve = match (
        headers.get(header::CONTENT_ENCODING),
        content_length(&headers),
    ) {
        (None, Some(n)) => n.min(MAX_REQUEST_BYTES),
        _ => MAX_REQUEST_BYTES,
    };
    let Some(_reserved) = app.reserve_queued(reserve) else {
        tracing::debug!(bytes = reserve, "ingest refused: too much work queued");
        // Read and drop the body before answering, so the client is not cut off mid-send and
        // sees the 503 (SDKs retry it).
        super::discard_body(req).await;
        return unavailable(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server has too much work queued: retry later",
        ));
    };
    let (messages, mut rejected) = {
        let raw = match read_body(req, MAX_REQUEST_BYTES).await {
            Ok(b) => b,
            Err(None) => {
                return request_error(RequestError::TooLarge(format!(
                    "request is larger than {MAX_REQUEST_BYTES} bytes"
                )));
            }
            Err(Some(e)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    format!("could not read the body: {e}"),
                );
            }
        };
        let body = match decode(&headers, raw) {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        let parsed = match Parsed::new(endpoint, &body) {
            Ok(p) => p,
            Err(e) => return request_error(e),
        };
        if header_key.is_none() {
            match parsed.write_key() {
                Some(key) if app.keys.read().unwrap().write.contains(&hash_secret(key)) => {}
                Some(_) => {
                    return error(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "write key is not valid",
                    );
                }
                None => {
                    return error(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "send the write key as the Basic auth user name or as \"writeKey\" in the body",
                    );
                }
            }
        }
        let mut new_id = || uuid::Uuid::new_v4().to_string();
        // The request's bytes are dropped at the end of this block: what waits for the writer
        // is the messages alone.
        match parsed.messages(received_at, &mut new_id) {
            Ok(m) => m,
            Err(e) => return request_error(e),
        }
    };
    if !messages.is_empty() {
        match app.store.ingest(messages).await {
            Ok(outcome) => {
                for (index, message) in outcome.rejected {
                    if let Endpoint::Single(_) = endpoint {
                        return error(StatusCode::BAD_REQUEST, "too_many_ids", message);
                    }
                    rejected.push(Reject {
                        index,
                        code: "too_many_ids",
                        message,
                    });
                }
                rejected.sort_by_key(|r| r.index);
            }
            Err(StoreError::Unavailable(why)) => {
                tracing::warn!(reason = %why, "ingest refused: storage unavailable");
                return unavailable(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the server cannot take this now: retry later",
                ));
            }
            Err(e) => {
                tracing::error!(error = %e, "ingest failed");
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error (details are in the server log)",
                );
            }
        }
    }
    let mut answer = json!({"success": true});
    for r in &rejected {
        METRICS
            .events_rejected
            .get_or_create(&label("code", r.code))
            .inc();
    }
    if !rejected.is_empty() {
        answer["rejected"] = Value::Array(
            rejected
                .into_iter()
                .map(|r| json!({"index": r.index, "code": r.code, "message": r.message}))
                .collect(),
        );
    }
    json_response(StatusCode::OK, &answer)
}

/// The `Content-Length` a request declares, if any.
fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The write key of a Basic `Authorization` header (the user name; the password is ignored and
/// the colon optional). `Ok(None)` when there is no Basic header.
fn basic_user(headers: &HeaderMap) -> Result<Option<String>, &'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| "authorization header is not valid")?;
    let Some(encoded) = super::credentials(value, "basic") else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| "basic credentials are not valid base64")?;
    let text = String::from_utf8(decoded).map_err(|_| "basic credentials are not UTF-8")?;
    let user = text.split_once(':').map(|(u, _)| u).unwrap_or(&text);
    Ok(Some(user.to_string()))
}

/// Undoes `Content-Encoding: gzip`, keeping to the request size limit after decompression.
fn decode(headers: &HeaderMap, raw: bytes::Bytes) -> Result<bytes::Bytes, Response<Body>> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "identity" | "" => Ok(raw),
        "gzip" | "x-gzip" => crate::ingest::gunzip(&raw)
            .map(Into::into)
            .map_err(request_error),
        other => Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("content encoding \"{other}\" is not accepted: send gzip or no encoding"),
        )),
    }
}
