//! Admin endpoints for journeys, instances, destinations and simulation (SPEC §6).

use std::collections::BTreeMap;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Map, Value, json};

use super::{App, Body, admin_error, json_response, ok, pagination, read_body, store_error, views};
use crate::journey::{self, Problem, Status};

/// Most bytes in an admin request body (journey files, simulations).
const MAX_ADMIN_BODY: usize = 4 * 1024 * 1024;

/// Reads a JSON request body, or answers the error.
pub(super) async fn json_body(req: Request<Incoming>) -> Result<Value, Response<Body>> {
    let bytes = match read_body(req, MAX_ADMIN_BODY).await {
        Ok(b) => b,
        Err(None) => {
            return Err(admin_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("body is larger than {MAX_ADMIN_BODY} bytes"),
            ));
        }
        Err(Some(e)) => {
            return Err(admin_error(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("could not read the body: {e}"),
            ));
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        admin_error(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("body is not valid JSON: {e}"),
        )
    })
}

/// `422` listing every problem with its JSON path.
/// `422` listing the problems with their JSON paths: at most [`MAX_PROBLEMS`], then
/// `"truncated"` says how many more there were (SPEC §9).
pub(super) fn invalid(code: &str, problems: &[Problem]) -> Response<Body> {
    let message = match problems.len() {
        1 => format!("{}: {}", problems[0].path, problems[0].message),
        n => format!("{n} problems"),
    };
    let shown = &problems[..problems.len().min(MAX_PROBLEMS)];
    let mut error = json!({"code": code, "message": message, "details": shown});
    if problems.len() > shown.len() {
        error["truncated"] = json!(problems.len() - shown.len());
    }
    json_response(StatusCode::UNPROCESSABLE_ENTITY, &json!({ "error": error }))
}

/// Most problems a validation answer lists.
const MAX_PROBLEMS: usize = 100;

/// Most events one simulation replays (SPEC §6.7).
const MAX_SIMULATED_EVENTS: usize = 10_000;

/// JSON with every object's keys sorted: the same document always has the same text, whatever
/// order the client wrote it in, so re-uploading it makes no new version.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, Value> =
                m.iter().map(|(k, v)| (k, canonical(v))).collect();
            let mut out = Map::new();
            for (k, v) in sorted {
                out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

pub(super) async fn put_journey(app: &App, id: String, req: Request<Incoming>) -> Response<Body> {
    let doc = match json_body(req).await {
        Ok(d) => d,
        Err(resp) => return resp,
    };
    let mut problems = Vec::new();
    match doc.get("id").and_then(Value::as_str) {
        Some(body_id) if body_id != id => problems.push(Problem {
            path: "/id".into(),
            message: format!("id \"{body_id}\" does not match the URL's \"{id}\""),
        }),
        _ => {}
    }
    let parsed = journey::parse(&doc);
    let journey = match parsed {
        Ok(j) if problems.is_empty() => j,
        Ok(_) => return invalid("invalid_journey", &problems),
        Err(more) => {
            problems.extend(more);
            return invalid("invalid_journey", &problems);
        }
    };
    let definition = canonical(&doc).to_string();
    match app.store.publish_journey(journey, definition).await {
        Ok(p) => {
            tracing::info!(journey = %id, version = p.version, created = p.created, "journey published");
            let status = if p.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            json_response(status, &json!({"id": id, "version": p.version}))
        }
        Err(e) => store_error(e),
    }
}

pub(super) async fn list_journeys(app: &App, query: Option<&str>) -> Response<Body> {
    let (limit, cursor) = match pagination(query) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    ok(app.store.journeys(cursor, limit).await, |page| {
        views::page(page, views::journey_summary)
    })
}

pub(super) async fn get_journey(app: &App, id: String) -> Response<Body> {
    ok(app.store.journey(id).await, views::journey_detail)
}

pub(super) async fn set_status(app: &App, id: String, status: Status) -> Response<Body> {
    match app.store.set_journey_status(id.clone(), status).await {
        Ok(()) => {
            let what = match status {
                Status::Paused => "journey paused",
                _ => "journey resumed",
            };
            tracing::info!(journey = %id, "{what}");
            json_response(
                StatusCode::OK,
                &json!({"id": id, "status": status.as_str()}),
            )
        }
        Err(e) => store_error(e),
    }
}

pub(super) async fn archive(app: &App, id: String) -> Response<Body> {
    match app.store.archive_journey(id.clone()).await {
        Ok(ended) => {
            tracing::info!(journey = %id, instances_ended = ended, "journey archived");
            json_response(
                StatusCode::OK,
                &json!({"id": id, "status": "archived", "instances_ended": ended}),
            )
        }
        Err(e) => store_error(e),
    }
}

pub(super) async fn stats(app: &App, id: String, query: Option<&str>) -> Response<Body> {
    let version = match super::version_param(query) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let counters = match app.store.journey_stats(id.clone(), version).await {
        Ok(c) => c,
        Err(e) => return store_error(e),
    };
    // The steps and branches of the version asked for (else the newest) are listed even at zero.
    let definition = match version {
        Some(v) => app.store.journey_version(id.clone(), v).await,
        None => app.store.journey(id.clone()).await.map(|d| d.definition),
    };
    let definition = match definition {
        Ok(d) => d,
        Err(e) => return store_error(e),
    };
    let journey = journey::parse(&definition).ok();
    json_response(
        StatusCode::OK,
        &views::stats(&id, version, journey.as_ref(), &counters),
    )
}

pub(super) async fn instance(app: &App, id: &str) -> Response<Body> {
    let Ok(id) = id.parse::<i64>() else {
        return admin_error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("instance \"{id}\" not found"),
        );
    };
    ok(app.store.instance(id).await, views::instance_detail)
}

pub(super) async fn simulate(app: &App, req: Request<Incoming>) -> Response<Body> {
    let doc = match json_body(req).await {
        Ok(d) => d,
        Err(resp) => return resp,
    };
    let events = doc
        .get("events")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if events > MAX_SIMULATED_EVENTS {
        return admin_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("{events} events, more than the {MAX_SIMULATED_EVENTS} one simulation replays"),
        );
    }
    // Sends count against the frequency caps of the destinations that exist, as live.
    let caps = match app.store.destination_caps().await {
        Ok(c) => c,
        Err(e) => return store_error(e),
    };
    // Off the request-serving threads: a large simulation never delays ingest or /healthz.
    let max_active = app.max_active;
    let answer = tokio::task::spawn_blocking(move || {
        crate::sim::parse(&doc).map(|mut input| {
            input.caps = caps;
            views::simulation(&crate::sim::run(&input, max_active))
        })
    })
    .await
    .expect("simulation panicked");
    match answer {
        Ok(trace) => json_response(StatusCode::OK, &trace),
        Err(problems) => invalid("invalid_simulation", &problems),
    }
}

pub(super) async fn put_destination(
    app: &App,
    id: String,
    req: Request<Incoming>,
) -> Response<Body> {
    if !crate::delivery::valid_id(&id) {
        return invalid(
            "invalid_destination",
            &[Problem {
                path: "".into(),
                message: format!("destination id \"{id}\" must be 1 to 64 of A-Z a-z 0-9 _ - ."),
            }],
        );
    }
    let doc = match json_body(req).await {
        Ok(d) => d,
        Err(resp) => return resp,
    };
    let crate::delivery::Document {
        destination: mut dest,
        mut secrets,
    } = match crate::delivery::parse(&doc) {
        Ok(d) => d,
        Err(problems) => return invalid("invalid_destination", &problems),
    };
    // Masked values sent back (a GET, edited, PUT again) stand for what is stored.
    let stored = match app.store.destination_secrets(id.clone()).await {
        Ok(s) => s,
        Err(e) => return store_error(e),
    };
    if let Err(path) = dest.unmask(&stored) {
        let problem = Problem::new(
            path,
            format!(
                "\"{}\" stands for a stored value, and none is stored",
                crate::delivery::MASK
            ),
        );
        return invalid("invalid_destination", &[problem]);
    }
    secrets.extend(dest.hidden());
    if dest.kind == crate::delivery::Kind::Segment
        && !matches!(secrets.get("write_key"), Some(Value::String(_)))
    {
        let stored = match app.store.destination(id.clone()).await {
            Ok(d) => d.secrets_set.iter().any(|s| s == "write_key"),
            Err(_) => false,
        };
        if !stored || secrets.contains_key("write_key") {
            let problem = Problem {
                path: "/write_key".into(),
                message: "a segment destination needs a \"write_key\"".into(),
            };
            return invalid("invalid_destination", &[problem]);
        }
    }
    match app
        .store
        .put_destination(id.clone(), dest.public(), secrets)
        .await
    {
        Ok(created) => {
            tracing::info!(destination = %id, created, "destination saved");
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            match app.store.destination(id).await {
                Ok(d) => json_response(status, &views::destination(&d)),
                Err(e) => store_error(e),
            }
        }
        Err(e) => store_error(e),
    }
}

pub(super) async fn get_destination(app: &App, id: String) -> Response<Body> {
    ok(app.store.destination(id).await, views::destination)
}

pub(super) async fn list_destinations(app: &App, query: Option<&str>) -> Response<Body> {
    let (limit, cursor) = match pagination(query) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    ok(app.store.destinations(cursor, limit).await, |page| {
        views::page(page, views::destination)
    })
}

pub(super) async fn delete_destination(app: &App, id: String) -> Response<Body> {
    match app.store.delete_destination(id.clone()).await {
        Ok(()) => {
            tracing::info!(destination = %id, "destination deleted");
            json_response(StatusCode::OK, &json!({"id": id, "deleted": true}))
        }
        Err(e) => store_error(e),
    }
}

pub(super) async fn list_deliveries(app: &App, query: Option<&str>) -> Response<Body> {
    let (limit, cursor) = match pagination(query) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let cursor = match cursor.map(|c| {
        c.split_once(':')
            .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_string())))
    }) {
        None => None,
        Some(Some(c)) => Some(c),
        Some(None) => {
            return admin_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "cursor is not valid",
            );
        }
    };
    let get = |key: &str| super::filter(query, key);
    let status = match get("status").map(|s| (crate::delivery::Status::parse(&s), s)) {
        None => None,
        Some((Some(status), _)) => Some(status),
        Some((None, s)) => {
            return admin_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("status \"{s}\" is not one of pending, succeeded, failed, capped"),
            );
        }
    };
    match app
        .store
        .deliveries(status, get("destination"), cursor, limit)
        .await
    {
        Ok(page) => json_response(StatusCode::OK, &views::page(&page, views::delivery)),
        Err(e) => store_error(e),
    }
}

pub(super) async fn get_delivery(app: &App, id: String) -> Response<Body> {
    ok(app.store.delivery(id).await, views::delivery)
}

pub(super) async fn retry_delivery(app: &App, id: String) -> Response<Body> {
    if let Err(e) = app.store.retry_delivery(id.clone()).await {
        return store_error(e);
    }
    get_delivery(app, id).await
}
