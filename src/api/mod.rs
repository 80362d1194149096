//! The HTTP API: routes, authentication, request and response shapes, and the one place where
//! errors become status codes. It is the only module that knows HTTP.
//!
//! Two families of routes with two error shapes: the Segment-compatible ingest API
//! (`{"success": false, "code", "message"}`, write keys) and the admin API
//! (`{"error": {"code", "message", "details"}}`, bearer admin tokens).
//!
//! Helpers here return `Result<T, Response<Body>>` so a handler can answer an error with `?`-like
//! early returns; the large `Err` is built at most once per request, so its size does not matter.
#![allow(clippy::result_large_err)]

mod admin;
mod ingest;
mod journeys;
pub(crate) mod views;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::store::{KeySet, Refusal, Store, StoreError, hash_secret};

pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// Everything a request handler needs; shared by every connection.
pub(crate) struct App {
    store: Store,
    keys: KeySet,
    /// The per-profile cap on active instances, for simulations to match the live engine.
    max_active: usize,
}

impl App {
    pub(crate) fn new(store: Store, keys: KeySet, max_active: usize) -> Arc<App> {
        Arc::new(App {
            store,
            keys,
            max_active,
        })
    }

    fn now(&self) -> i64 {
        self.store.clock().now_ms()
    }

    /// Routes one request.
    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let path = req.uri().path().trim_end_matches('/').to_string();
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let method = req.method().clone();
        let response = match (&method, segments.as_slice()) {
            (&Method::POST, ["v1", name]) if ingest::endpoint(name).is_some() => {
                ingest::handle(&self, ingest::endpoint(name).expect("checked"), req).await
            }
            (&Method::GET, ["healthz"]) => admin::healthz(&self).await,
            (&Method::GET, ["metrics"]) => match self.admin_auth(&req) {
                Err(resp) => resp,
                Ok(()) => admin::metrics(&self).await,
            },
            (_, ["v1", ..]) => match self.admin_auth(&req) {
                Err(resp) => resp,
                Ok(()) => admin::route(&self, &method, &segments[1..], req).await,
            },
            _ => admin_error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route for {method} {path}"),
            ),
        };
        Ok(response)
    }

    fn admin_auth(&self, req: &Request<Incoming>) -> Result<(), Response<Body>> {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        match token {
            Some(t) if self.keys.admin.contains(&hash_secret(t)) => Ok(()),
            Some(_) => Err(admin_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "admin token is not valid",
            )),
            None => Err(admin_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this path needs an \"Authorization: Bearer <admin token>\" header",
            )),
        }
    }
}

/// Reads a request body up to `limit` bytes. `Err(None)` means the body was larger.
async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, Option<String>> {
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(None)
        }
        Err(e) => Err(Some(e.to_string())),
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut resp = Response::new(full(serde_json::to_vec(value).expect("JSON serialises")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// An admin API error: `{"error": {"code", "message"}}`.
fn admin_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<Body> {
    json_response(
        status,
        &json!({"error": {"code": code, "message": message.into(), "details": []}}),
    )
}

/// The one mapping from store failures to admin API responses. Internal details go to the log,
/// once, never into a response body.
fn store_error(e: StoreError) -> Response<Body> {
    match e {
        StoreError::NotFound(what) => admin_error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        ),
        StoreError::Refused(Refusal::InUse(journeys)) => json_response(
            StatusCode::CONFLICT,
            &json!({"error": {
                "code": "in_use",
                "message": format!("in use by journeys: {}", journeys.join(", ")),
                "details": journeys,
            }}),
        ),
        StoreError::Refused(Refusal::UnknownDestinations(unknown)) => {
            let problems: Vec<crate::journey::Problem> = unknown
                .into_iter()
                .map(|(path, dest)| crate::journey::Problem {
                    path,
                    message: format!("unknown destination \"{dest}\""),
                })
                .collect();
            journeys::invalid("invalid_journey", &problems)
        }
        StoreError::Unavailable(why) => {
            tracing::warn!(reason = %why, "request refused: storage unavailable");
            unavailable(admin_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the server cannot take this now: retry later",
            ))
        }
        other => {
            tracing::error!(error = %other, "request failed");
            admin_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error (details are in the server log)",
            )
        }
    }
}

/// Adds the `Retry-After` header that tells clients (and Segment SDKs) to come back.
fn unavailable(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// Parses `?limit=&cursor=` of a list call: limit defaults to 100 and is capped at 1000.
fn pagination(query: Option<&str>) -> Result<(usize, Option<String>), Response<Body>> {
    let mut limit = 100usize;
    let mut cursor = None;
    for (k, v) in query_pairs(query) {
        match k.as_str() {
            "limit" => match v.parse::<usize>() {
                Ok(n) if n >= 1 => limit = n.min(1000),
                _ => {
                    return Err(admin_error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!("limit must be a positive integer, got \"{v}\""),
                    ));
                }
            },
            "cursor" if !v.is_empty() => cursor = Some(v),
            _ => {}
        }
    }
    Ok((limit, cursor))
}

/// Decodes the pairs of a query string.
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Decodes one path segment (`%40` in an email address, say).
fn path_segment(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}
