//! The admin API (SPEC §6): bearer-authenticated JSON endpoints over the store.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::json;

use super::{App, Body, admin_error, json_response, ok, pagination, store_error, views};

pub(super) async fn healthz(app: &App) -> Response<Body> {
    match app.store.health().await {
        Ok(()) => json_response(StatusCode::OK, &json!({"status": "ok"})),
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "unavailable", "error": e.to_string()}),
            )
        }
    }
}

/// Prometheus metrics; the gauges that describe the database are read now.
pub(super) async fn metrics(app: &App) -> Response<Body> {
    use crate::metrics::METRICS;
    match app.store.counts().await {
        Ok(c) => {
            METRICS.timers_pending.set(c.timers);
            METRICS.deliveries_pending.set(c.deliveries);
        }
        Err(e) => tracing::warn!(error = %e, "reading pending counts for metrics failed"),
    }
    METRICS.queue_depth.set(app.store.writer().depth() as i64);
    let mut resp = Response::new(super::full(METRICS.render()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

pub(super) async fn profile(app: &App, id: String) -> Response<Body> {
    let p = match app.store.profile(id).await {
        Ok(p) => p,
        Err(e) => return store_error(e),
    };
    let instances = match app.store.profile_instances(p.key.clone(), 100).await {
        Ok(i) => i,
        Err(e) => return store_error(e),
    };
    json_response(StatusCode::OK, &views::profile(&p, &instances))
}

pub(super) async fn timeline(app: &App, id: String, query: Option<&str>) -> Response<Body> {
    let (limit, cursor) = match pagination(query) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let cursor = match cursor.map(|c| c.parse::<i64>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            return admin_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "cursor is not valid",
            );
        }
    };
    ok(app.store.timeline(id, cursor, limit).await, |page| {
        views::page(page, views::timeline_item)
    })
}

/// Streams a consistent snapshot of the database file.
/// A backup download whose client takes no chunk for this long is abandoned.
const BACKUP_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Streams a consistent snapshot of the database file; one at a time, since each holds a copy of
/// the database on disk while it is sent.
pub(super) async fn backup(app: &App) -> Response<Body> {
    let Ok(permit) = app.backups.clone().try_acquire_owned() else {
        return super::unavailable(admin_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "a backup is being sent already: retry when it is done",
        ));
    };
    let file = match app.store.backup_file().await {
        Ok(f) => f,
        Err(e) => return store_error(e),
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let (mut tx, body) =
        http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(4);
    // Read on a blocking thread and hand each chunk to the response body. The thread belongs to
    // this response: it ends at end of file, or as soon as the client goes away.
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let _permit = permit;
        let mut file = file;
        loop {
            let mut buf = vec![0u8; 256 * 1024];
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    let sent = runtime.block_on(tokio::time::timeout(
                        BACKUP_SEND_TIMEOUT,
                        tx.send(Frame::data(buf.into())),
                    ));
                    if !matches!(sent, Ok(Ok(()))) {
                        break;
                    }
                }
                Err(e) => {
                    // Dropping the sender ends the body short of its Content-Length: the client
                    // sees a failed transfer rather than a truncated file it might trust.
                    tracing::error!(error = %e, "backup stream failed");
                    break;
                }
            }
        }
    });
    let mut resp = Response::new(body.boxed());
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.sqlite3"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"journeyd-backup.db\""),
    );
    resp
}
