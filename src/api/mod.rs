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
pub(crate) mod backtest;
mod conn;
mod console;
mod ingest;
mod journeys;
mod operator;
mod routes;
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

pub(crate) use conn::serve;

pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// Everything a request handler needs; shared by every connection.
pub(crate) struct App {
    store: Store,
    /// The digests of the admin tokens and write keys, reloaded when one is added or revoked.
    keys: std::sync::RwLock<KeySet>,
    /// The per-profile cap on active instances, for simulations to match the live engine.
    max_active: usize,
    /// Bytes of ingest work that may be received and waiting for the writer at once, as permits.
    queued: Arc<tokio::sync::Semaphore>,
    /// One backup download at a time.
    backups: Arc<tokio::sync::Semaphore>,
    /// Turns true when the server stops: long responses (the event stream) end.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl App {
    pub(crate) fn new(
        store: Store,
        keys: KeySet,
        max_active: usize,
        max_queued_bytes: usize,
    ) -> Arc<App> {
        Arc::new(App {
            store,
            keys: std::sync::RwLock::new(keys),
            max_active,
            queued: Arc::new(tokio::sync::Semaphore::new(
                max_queued_bytes.min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
            backups: Arc::new(tokio::sync::Semaphore::new(1)),
            stopping: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Reserves `bytes` of the queued-work budget until the returned permit is dropped, or
    /// `None` when the budget is spent.
    fn reserve_queued(&self, bytes: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let n = u32::try_from(bytes.max(1)).ok()?;
        self.queued.clone().try_acquire_many_owned(n).ok()
    }

    /// Ends long responses (the event stream): the server is stopping.
    pub(crate) fn stop_streams(&self) {
        self.stopping.send_replace(true);
    }

    fn now(&self) -> i64 {
        self.store.clock().now_ms()
    }

    /// Routes one request: the route first (an unknown path is a `404`, a wrong method a `405`,
    /// whatever the credentials), then its credentials, then its handler.
    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let method = req.method().clone();
        let route = match routes::resolve(&method, req.uri().path()) {
            routes::Resolved::Route(route) => route,
            routes::Resolved::NotFound => {
                return Ok(admin_error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no route for {method} {}", req.uri().path()),
                ));
            }
            routes::Resolved::WrongMethod(allowed) => {
                let allow: Vec<&str> = allowed.iter().map(Method::as_str).collect();
                let mut resp = admin_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    format!("{method} is not allowed here: use {}", allow.join(", ")),
                );
                if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
                    resp.headers_mut().insert(header::ALLOW, v);
                }
                return Ok(resp);
            }
        };
        if route.access() == routes::Access::Admin
            && let Err(resp) = self.admin_auth(&req)
        {
            return Ok(resp);
        }
        Ok(self.dispatch(route, req).await)
    }

    async fn dispatch(&self, route: routes::Route, req: Request<Incoming>) -> Response<Body> {
        use routes::Route as R;
        let query = req.uri().query().map(str::to_string);
        let query = query.as_deref();
        match route {
            R::Ingest(endpoint) => ingest::handle(self, endpoint, req).await,
            R::Healthz => admin::healthz(self).await,
            R::Metrics => admin::metrics(self).await,
            R::Backup => admin::backup(self).await,
            R::Simulate => journeys::simulate(self, req).await,
            R::Profile(id) => admin::profile(self, id).await,
            R::Timeline(id) => admin::timeline(self, id, query).await,
            R::Journeys => journeys::list_journeys(self, query).await,
            R::PutJourney(id) => journeys::put_journey(self, id, req).await,
            R::Journey(id) => journeys::get_journey(self, id).await,
            R::Archive(id) => journeys::archive(self, id).await,
            R::SetStatus(id, status) => journeys::set_status(self, id, status).await,
            R::Stats(id) => journeys::stats(self, id, query).await,
            R::Instance(id) => journeys::instance(self, &id).await,
            R::Deliveries => journeys::list_deliveries(self, query).await,
            R::Delivery(id) => journeys::get_delivery(self, id).await,
            R::RetryDelivery(id) => journeys::retry_delivery(self, id).await,
            R::Destinations => journeys::list_destinations(self, query).await,
            R::PutDestination(id) => journeys::put_destination(self, id, req).await,
            R::Destination(id) => journeys::get_destination(self, id).await,
            R::DeleteDestination(id) => journeys::delete_destination(self, id).await,
            R::TestDestination(id) => operator::test_destination(self, id).await,
            R::JourneyVersion(id, n) => operator::version(self, id, n).await,
            R::JourneyInstances(id) => operator::instances(self, id, query).await,
            R::Profiles => operator::profiles(self, query).await,
            R::ForgetProfile(id) => operator::forget(self, id).await,
            R::RetryFailed => operator::retry_failed(self, query).await,
            R::Keys => operator::keys(self).await,
            R::AddKey => operator::add_key(self, req).await,
            R::RevokeKey(id) => operator::revoke_key(self, id).await,
            R::Stream => operator::stream(self, query).await,
            R::Console(asset) => console::serve(&asset, req.headers()),
            R::JourneyLayout(id) => console::journey_layout(self, id, query).await,
            R::ValidateJourney => console::validate(self, req).await,
            R::Backtest => backtest::backtest(self, req).await,
        }
    }

    fn admin_auth(&self, req: &Request<Incoming>) -> Result<(), Response<Body>> {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| credentials(v, "bearer"));
        match token {
            Some(t) if self.keys.read().unwrap().admin.contains(&hash_secret(t)) => Ok(()),
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

/// The credentials of an `Authorization` header value of `scheme` (compared case-insensitively,
/// as RFC 7235 says), trimmed; `None` for another scheme.
fn credentials<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = value.trim_start().split_once(' ')?;
    given
        .eq_ignore_ascii_case(scheme)
        .then(|| rest.trim())
        .filter(|c| !c.is_empty())
}

/// Reads a request body up to `limit` bytes, within [`conn::BODY`]. `Err(None)` means the body
/// was larger.
async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, Option<String>> {
    let read = Limited::new(req.into_body(), limit).collect();
    match tokio::time::timeout(conn::BODY, read).await {
        Err(_) => Err(Some(format!(
            "the body did not arrive within {} s",
            conn::BODY.as_secs()
        ))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(None)
        }
        Ok(Err(e)) => Err(Some(e.to_string())),
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
        StoreError::Refused(
            why @ (Refusal::LastAdminToken | Refusal::DestinationDeleted | Refusal::Destination(_)),
        ) => admin_error(StatusCode::CONFLICT, "conflict", why.to_string()),
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

/// Reads a request body to its end (at most the largest request, within [`conn::BODY`]) and
/// drops it as it arrives.
async fn discard_body(req: Request<Incoming>) {
    let mut body = req.into_body();
    let mut left = crate::ingest::MAX_REQUEST_BYTES;
    let drain = async {
        while let Some(Ok(frame)) = body.frame().await {
            let n = frame.data_ref().map_or(0, |d| d.len());
            if n >= left {
                break;
            }
            left -= n;
        }
    };
    let _ = tokio::time::timeout(conn::BODY, drain).await;
}

/// `200` with the view of what the store answered, or its error.
fn ok<T>(answer: Result<T, StoreError>, view: impl FnOnce(&T) -> Value) -> Response<Body> {
    match answer {
        Ok(t) => json_response(StatusCode::OK, &view(&t)),
        Err(e) => store_error(e),
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

/// The value of a filter `key` of a query string: a filter given empty counts as not given.
fn filter(query: Option<&str>, key: &str) -> Option<String> {
    query_pairs(query)
        .into_iter()
        .find(|(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v)
}

/// Parses `?version=N` (absent or empty: `None`), answering 400 when it is not a number.
fn version_param(query: Option<&str>) -> Result<Option<i64>, Response<Body>> {
    match filter(query, "version") {
        None => Ok(None),
        Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
            admin_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("version \"{v}\" is not a number"),
            )
        }),
    }
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
