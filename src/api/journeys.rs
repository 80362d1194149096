//! Admin endpoints for journeys, instances, destinations and simulation (SPEC §6).

use std::collections::BTreeMap;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Map, Value, json};

use super::{App, Body, admin_error, json_response, pagination, read_body, store_error};
use crate::engine::State;
use crate::ingest::format_ms;
use crate::journey::{self, Problem, StepKind};
use crate::store::{DeleteRefused, InstanceView, JourneySummary, TransitionRow};

/// Most bytes in an admin request body (journey files, simulations).
const MAX_ADMIN_BODY: usize = 4 * 1024 * 1024;

/// Reads a JSON request body, or answers the error.
pub async fn json_body(req: Request<Incoming>) -> Result<Value, Response<Body>> {
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
pub fn invalid(code: &str, problems: &[Problem]) -> Response<Body> {
    let message = match problems.len() {
        1 => format!("{}: {}", problems[0].path, problems[0].message),
        n => format!("{n} problems"),
    };
    json_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        &json!({"error": {"code": code, "message": message, "details": problems}}),
    )
}

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

pub async fn put_journey(app: &App, id: String, req: Request<Incoming>) -> Response<Body> {
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
        Ok(Ok(p)) => {
            let status = if p.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            json_response(status, &json!({"id": id, "version": p.version}))
        }
        Ok(Err(unknown)) => {
            let problems: Vec<Problem> = unknown
                .into_iter()
                .map(|(path, dest)| Problem {
                    path,
                    message: format!("unknown destination \"{dest}\""),
                })
                .collect();
            invalid("invalid_journey", &problems)
        }
        Err(e) => store_error(e),
    }
}

fn summary_json(s: &JourneySummary) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "status": s.status,
        "version": s.version,
        "counts": s.counts,
        "created_at": format_ms(s.created_at),
        "updated_at": format_ms(s.updated_at),
    })
}

pub async fn list_journeys(app: &App, query: Option<&str>) -> Response<Body> {
    let (limit, cursor) = match pagination(query) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    match app.store.journeys(cursor, limit).await {
        Ok(page) => json_response(
            StatusCode::OK,
            &json!({"items": page.items.iter().map(summary_json).collect::<Vec<_>>(), "next_cursor": page.next_cursor}),
        ),
        Err(e) => store_error(e),
    }
}

pub async fn get_journey(app: &App, id: String) -> Response<Body> {
    match app.store.journey(id).await {
        Ok(d) => {
            let mut v = summary_json(&d.summary);
            v["definition"] = d.definition;
            v["versions"] = d
                .versions
                .iter()
                .map(|(n, at)| json!({"version": n, "created_at": format_ms(*at)}))
                .collect();
            json_response(StatusCode::OK, &v)
        }
        Err(e) => store_error(e),
    }
}

pub async fn set_status(app: &App, id: String, status: &'static str) -> Response<Body> {
    match app.store.set_journey_status(id.clone(), status).await {
        Ok(()) => json_response(StatusCode::OK, &json!({"id": id, "status": status})),
        Err(e) => store_error(e),
    }
}

pub async fn archive(app: &App, id: String) -> Response<Body> {
    match app.store.archive_journey(id.clone()).await {
        Ok(ended) => json_response(
            StatusCode::OK,
            &json!({"id": id, "status": "archived", "instances_ended": ended}),
        ),
        Err(e) => store_error(e),
    }
}

pub async fn stats(app: &App, id: String, query: Option<&str>) -> Response<Body> {
    let version = match super::query_pairs(query)
        .into_iter()
        .find(|(k, _)| k == "version")
    {
        None => None,
        Some((_, v)) => match v.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return admin_error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("version \"{v}\" is not a number"),
                );
            }
        },
    };
    let (detail, rows) = match app.store.journey_stats(id.clone(), version).await {
        Ok(r) => r,
        Err(e) => return store_error(e),
    };
    // The steps and branches of the version asked for (else the newest) are listed even at zero.
    let definition = match version {
        Some(v) => match app.store.journey_version(id.clone(), v).await {
            Ok(d) => d,
            Err(e) => return store_error(e),
        },
        None => detail.definition,
    };
    let mut totals: BTreeMap<String, i64> = crate::store::TOTALS
        .iter()
        .map(|k| (k.to_string(), 0))
        .collect();
    let mut steps: BTreeMap<String, BTreeMap<&str, i64>> = BTreeMap::new();
    let mut branches: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    if let Ok(j) = journey::parse(&definition) {
        for step in &j.steps {
            steps.insert(step.id.clone(), [("reached", 0), ("active", 0)].into());
            let labels: Vec<String> = match &step.kind {
                StepKind::HoldUntil {
                    branches, max_hold, ..
                } => {
                    let mut l: Vec<String> = branches.iter().map(|b| b.label()).collect();
                    if max_hold.is_some() {
                        l.push("timeout".into());
                    }
                    l
                }
                StepKind::Split { branches, .. } => {
                    let mut l: Vec<String> = branches
                        .iter()
                        .enumerate()
                        .map(|(n, b)| b.label(n))
                        .collect();
                    l.push("else".into());
                    l
                }
                StepKind::RandomSplit { branches, .. } => branches
                    .iter()
                    .enumerate()
                    .map(|(n, b)| b.label(n))
                    .collect(),
                _ => continue,
            };
            branches.insert(
                step.id.clone(),
                labels.into_iter().map(|l| (l, 0)).collect(),
            );
        }
    }
    for (kind, step, label, count) in rows {
        match kind.as_str() {
            "total" => *totals.entry(label).or_default() += count,
            "reached" => *steps.entry(step).or_default().entry("reached").or_default() += count,
            "waiting" => *steps.entry(step).or_default().entry("active").or_default() += count,
            "branch" => *branches.entry(step).or_default().entry(label).or_default() += count,
            _ => {}
        }
    }
    let mut out = json!({"id": id, "version": version, "steps": steps, "branches": branches});
    for (k, v) in totals {
        out[k] = json!(v);
    }
    json_response(StatusCode::OK, &out)
}

pub fn transition_json(t: &TransitionRow) -> Value {
    let mut v = json!({
        "seq": t.seq,
        "at": format_ms(t.at),
        "instance_id": t.instance_id,
        "journey_id": t.journey_id,
        "version": t.version,
        "what": t.what,
    });
    if let Some(step) = &t.step {
        v["step"] = json!(step);
    }
    if let Some(detail) = &t.detail {
        v["detail"] = json!(detail);
    }
    v
}

pub fn instance_json(i: &InstanceView) -> Value {
    let mut v = json!({
        "id": i.id,
        "profile": i.profile_key,
        "journey": i.journey_id,
        "journey_id": i.journey_id,
        "version": i.version,
        "state": i.state,
        "step": i.step,
        "context": i.context,
        "resets": i.resets,
        "due_at": i.due_at.map(format_ms),
        "entered_at": format_ms(i.entered_at),
        "updated_at": format_ms(i.updated_at),
    });
    if let Some(u) = &i.unique_value {
        v["unique_value"] = u.clone();
    }
    if i.state != State::Active.as_str() {
        v["outcome"] = json!(i.state);
    }
    v
}

pub async fn instance(app: &App, id: &str) -> Response<Body> {
    let Ok(id) = id.parse::<i64>() else {
        return admin_error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("instance \"{id}\" not found"),
        );
    };
    match app.store.instance(id).await {
        Ok(i) => {
            let mut v = instance_json(&i);
            v["history"] = i.history.iter().map(transition_json).collect();
            json_response(StatusCode::OK, &v)
        }
        Err(e) => store_error(e),
    }
}

pub async fn simulate(app: &App, req: Request<Incoming>) -> Response<Body> {
    let doc = match json_body(req).await {
        Ok(d) => d,
        Err(resp) => return resp,
    };
    match crate::sim::parse(&doc) {
        Ok(input) => json_response(
            StatusCode::OK,
            &crate::sim::run(&input, app.max_active).to_json(),
        ),
        Err(problems) => invalid("invalid_simulation", &problems),
    }
}

pub async fn put_destination(app: &App, id: String, req: Request<Incoming>) -> Response<Body> {
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
    let (dest, config, secrets) = match crate::delivery::parse(&doc) {
        Ok(p) => p,
        Err(problems) => return invalid("invalid_destination", &problems),
    };
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
    match app.store.put_destination(id.clone(), config, secrets).await {
        Ok(created) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            match app.store.destination(id).await {
                Ok(d) => json_response(status, &destination_json(&d)),
                Err(e) => store_error(e),
            }
        }
        Err(e) => store_error(e),
    }
}

fn destination_json(d: &crate::store::DestinationView) -> Value {
    let mut v = d.config.clone();
    v["id"] = json!(d.id);
    for field in crate::delivery::SECRET_FIELDS {
        v[format!("{field}_set")] = json!(d.secrets_set.iter().any(|s| s == field));
    }
    v["created_at"] = json!(format_ms(d.created_at));
    v["updated_at"] = json!(format_ms(d.updated_at));
    v
}

pub async fn get_destination(app: &App, id: String) -> Response<Body> {
    match app.store.destination(id).await {
        Ok(d) => json_response(StatusCode::OK, &destination_json(&d)),
        Err(e) => store_error(e),
    }
}

pub async fn list_destinations(app: &App, query: Option<&str>) -> Response<Body> {
    let (limit, cursor) = match pagination(query) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    match app.store.destinations(cursor, limit).await {
        Ok(page) => json_response(
            StatusCode::OK,
            &json!({"items": page.items.iter().map(destination_json).collect::<Vec<_>>(), "next_cursor": page.next_cursor}),
        ),
        Err(e) => store_error(e),
    }
}

pub async fn delete_destination(app: &App, id: String) -> Response<Body> {
    match app.store.delete_destination(id.clone()).await {
        Ok(Ok(())) => json_response(StatusCode::OK, &json!({"id": id, "deleted": true})),
        Ok(Err(DeleteRefused::InUse(journeys))) => json_response(
            StatusCode::CONFLICT,
            &json!({"error": {
                "code": "in_use",
                "message": format!("destination \"{id}\" is used by journeys: {}", journeys.join(", ")),
                "details": journeys,
            }}),
        ),
        Err(e) => store_error(e),
    }
}

fn delivery_json(d: &crate::store::DeliveryView) -> Value {
    json!({
        "id": d.id,
        "status": d.status,
        "destination": d.destination,
        "profile": d.profile_key,
        "journey_id": d.journey_id,
        "instance_id": d.instance_id,
        "step_id": d.step_id,
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at.map(format_ms),
        "last_status": d.last_status,
        "last_error": d.last_error,
        "created_at": format_ms(d.created_at),
        "updated_at": format_ms(d.updated_at),
        "payload": d.payload,
    })
}

pub async fn list_deliveries(app: &App, query: Option<&str>) -> Response<Body> {
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
    let pairs = super::query_pairs(query);
    let get = |key: &str| {
        pairs
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    let status = get("status");
    if let Some(s) = &status
        && !["pending", "succeeded", "failed"].contains(&s.as_str())
    {
        return admin_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("status \"{s}\" is not one of pending, succeeded, failed"),
        );
    }
    match app
        .store
        .deliveries(status, get("destination"), cursor, limit)
        .await
    {
        Ok(page) => json_response(
            StatusCode::OK,
            &json!({"items": page.items.iter().map(delivery_json).collect::<Vec<_>>(), "next_cursor": page.next_cursor}),
        ),
        Err(e) => store_error(e),
    }
}

pub async fn get_delivery(app: &App, id: String) -> Response<Body> {
    match app.store.delivery(id).await {
        Ok(d) => json_response(StatusCode::OK, &delivery_json(&d)),
        Err(e) => store_error(e),
    }
}

pub async fn retry_delivery(app: &App, id: String) -> Response<Body> {
    if let Err(e) = app.store.retry_delivery(id.clone()).await {
        return store_error(e);
    }
    get_delivery(app, id).await
}
