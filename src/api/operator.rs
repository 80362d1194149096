//! The operator's side of the admin API (SPEC §6, §5): a journey's versions and instances,
//! profile search and erasure, bulk retry of dead letters, keys, test sends, and the stream of
//! committed changes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use super::{
    App, Body, admin_error, json_response, ok, pagination, store_error, version_param, views,
};
use crate::engine::State;
use crate::store::{InstanceFilter, StreamEvent};

/// `GET /v1/journeys/{id}/versions/{n}`: the definition its in-flight instances run.
pub(super) async fn version(app: &App, id: String, n: String) -> Response<Body> {
    let Ok(n) = n.parse::<i64>() else {
        return admin_error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("version \"{n}\" of journey \"{id}\" not found"),
        );
    };
    ok(
        app.store.journey_version(id.clone(), n).await,
        |def| json!({"id": id, "version": n, "definition": def}),
    )
}

/// `GET /v1/journeys/{id}/instances?state=&step=&version=`, newest first.
pub(super) async fn instances(app: &App, id: String, query: Option<&str>) -> Response<Body> {
    let (limit, cursor) = match pagination(query) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let bad = |what: String| admin_error(StatusCode::BAD_REQUEST, "bad_request", what);
    let state = match super::filter(query, "state").map(|v| (State::parse(&v), v)) {
        None => None,
        Some((Some(s), _)) => Some(s),
        Some((None, v)) => {
            return bad(format!(
                "state \"{v}\" is not one of active, completed, exited, archived"
            ));
        }
    };
    let filter = InstanceFilter {
        state,
        step: super::filter(query, "step"),
        version: match version_param(query) {
            Ok(v) => v,
            Err(resp) => return resp,
        },
    };
    let before = match cursor.map(|c| c.parse::<i64>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return bad("cursor is not valid".into()),
    };
    // A journey that does not exist is a 404, not an empty list.
    if let Err(e) = app.store.journey(id.clone()).await {
        return store_error(e);
    }
    ok(
        app.store.journey_instances(id, filter, before, limit).await,
        |page| views::page(page, views::instance),
    )
}

/// `GET /v1/profiles?prefix=`.
pub(super) async fn profiles(app: &App, query: Option<&str>) -> Response<Body> {
    let (limit, cursor) = match pagination(query) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let prefix = super::filter(query, "prefix").unwrap_or_default();
    ok(app.store.profiles(prefix, cursor, limit).await, |page| {
        views::page(page, views::profile_summary)
    })
}

/// `DELETE /v1/profiles/{id}`: an erasure request.
pub(super) async fn forget(app: &App, id: String) -> Response<Body> {
    match app.store.forget_profile(id).await {
        Ok(_) => no_content(),
        Err(e) => store_error(e),
    }
}

fn no_content() -> Response<Body> {
    let mut resp = Response::new(super::full(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

/// `POST /v1/deliveries/retry?status=failed&destination=`.
pub(super) async fn retry_failed(app: &App, query: Option<&str>) -> Response<Body> {
    let get = |key: &str| super::filter(query, key);
    if let Some(status) = get("status")
        && status != "failed"
    {
        return admin_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("only failed deliveries are retried in bulk, not \"{status}\""),
        );
    }
    ok(
        app.store.retry_failed(get("destination")).await,
        |n| json!({"retried": n}),
    )
}

/// `GET /v1/keys`.
pub(super) async fn keys(app: &App) -> Response<Body> {
    ok(
        app.store.keys().await,
        |keys| json!({"items": keys.iter().map(views::key).collect::<Vec<_>>(), "next_cursor": null}),
    )
}

/// `POST /v1/keys` with `{"kind": "write" | "admin"}`: the new key is shown this once.
pub(super) async fn add_key(app: &App, req: Request<Incoming>) -> Response<Body> {
    let doc = match super::journeys::json_body(req).await {
        Ok(d) => d,
        Err(resp) => return resp,
    };
    let kind = match doc.get("kind").and_then(Value::as_str) {
        Some("write") => "write",
        Some("admin") => "admin",
        _ => {
            return super::journeys::invalid(
                "invalid_key",
                &[crate::validate::Problem::new(
                    "/kind",
                    "expected \"write\" or \"admin\"",
                )],
            );
        }
    };
    let secret = crate::server::generate_secret();
    match app.store.add_key(kind, secret.clone()).await {
        Ok((view, keys)) => {
            app.set_keys(keys);
            tracing::info!(key = %view.id, kind, "key added");
            let mut body = views::key(&view);
            body["key"] = json!(secret);
            json_response(StatusCode::CREATED, &body)
        }
        Err(e) => store_error(e),
    }
}

/// `DELETE /v1/keys/{id}`: refused for the last admin token; a revoked key is refused at once.
pub(super) async fn revoke_key(app: &App, id: String) -> Response<Body> {
    match app.store.revoke_key(id.clone()).await {
        Ok(keys) => {
            app.set_keys(keys);
            tracing::info!(key = %id, "key revoked");
            no_content()
        }
        Err(e) => store_error(e),
    }
}

/// `POST /v1/destinations/{id}/test`: one sample payload, signed like any delivery; the
/// receiver's status, the start of its answer and the time taken. Nothing is stored.
pub(super) async fn test_destination(app: &App, id: String) -> Response<Body> {
    let row = match app.store.destination_row(id.clone()).await {
        Ok(r) => r,
        Err(e) => return store_error(e),
    };
    let now = app.now();
    let payload = json!({
        "type": "track",
        "event": "journeyd test",
        "userId": "journeyd-test",
        "timestamp": crate::clock::Timestamp(now),
        "properties": {
            "journey_context": {},
            "journey_metadata": {"journey_id": "test", "journey_version": 0, "instance_id": "0",
                                 "step_id": "test", "test": true},
        },
    });
    match crate::delivery::worker::test_send(&row, &payload, now).await {
        Ok(sent) => json_response(
            StatusCode::OK,
            &json!({
                "destination": id,
                "status": sent.status.as_ref().ok(),
                "error": sent.status.as_ref().err(),
                "body": sent.body,
                "took_ms": sent.took_ms,
                "payload": payload,
            }),
        ),
        Err(why) => admin_error(StatusCode::CONFLICT, "invalid_destination", why),
    }
}

/// A comment line every so often keeps a quiet stream's connection alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Events a stream's response holds ahead of the client; more wait in the broadcast channel.
const STREAM_BUFFER: usize = 64;
/// A client that takes no event for this long, with its socket's buffers full, is stuck or gone:
/// it is dropped. (One that reads, but slower than commits come, falls behind the broadcast
/// channel and is dropped too.)
const STALLED: Duration = Duration::from_secs(5);

/// `GET /v1/stream?journey=`: Server-Sent Events of committed transitions and delivery outcomes.
/// A client that falls behind is dropped; it never slows the writer.
pub(super) async fn stream(app: &App, query: Option<&str>) -> Response<Body> {
    let journey = super::filter(query, "journey");
    let mut events = app.store.subscribe();
    let mut stopping = app.stopping.subscribe();
    let (mut tx, body) =
        http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(STREAM_BUFFER);
    // The task belongs to the response: it ends when the client goes away, falls behind, or
    // the server stops.
    tokio::spawn(async move {
        let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
        if tx
            .try_send(Frame::data(Bytes::from_static(b": journeyd stream\n\n")))
            .is_err()
        {
            return;
        }
        loop {
            let frame = tokio::select! {
                event = events.recv() => match event {
                    Ok(event) => {
                        if journey.as_deref().is_some_and(|j| j != event.journey()) {
                            continue;
                        }
                        sse(&event)
                    }
                    // Fell behind, or the server is stopping: the client reconnects.
                    Err(_) => return,
                },
                _ = keep_alive.tick() => Bytes::from_static(b": keep-alive\n\n"),
                _ = stopping.changed() => return,
            };
            // A commit may publish thousands of events at once: a client that reads keeps up
            // through the broadcast channel's backlog; one that stalls is dropped.
            let sent = tokio::select! {
                sent = tokio::time::timeout(STALLED, tx.send(Frame::data(frame))) => matches!(sent, Ok(Ok(()))),
                _ = stopping.changed() => false,
            };
            if !sent {
                return;
            }
        }
    });
    let mut resp = Response::new(body.boxed());
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// One event in the SSE format: its kind as `event:`, its JSON as `data:`.
fn sse(event: &Arc<StreamEvent>) -> Bytes {
    let (kind, data) = views::stream_event(event);
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

impl App {
    pub(super) fn set_keys(&self, keys: crate::store::KeySet) {
        *self.keys.write().unwrap() = keys;
    }
}
