//! `POST /v1/journeys/backtest` (SPEC §6.8): what a draft journey would have done over the events
//! actually received. The stored events are read from a snapshot on a connection of their own,
//! on the blocking pool, so a backtest never holds the writer nor the serving threads. With
//! `?stream=1` the answer is Server-Sent Events: `progress` events, then one `result`.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use super::journeys::{invalid, json_body};
use super::{App, Body, json_response, query_pairs, store_error, views};
use crate::validate::{Checker, Problem};

/// Events between two progress reports.
const PROGRESS_EVERY: u64 = 50_000;

/// A validated backtest request.
struct Backtest {
    journey: std::sync::Arc<crate::journey::Journey>,
    since_ms: i64,
}

fn parse(doc: &Value) -> Result<Backtest, Vec<Problem>> {
    let mut check = Checker::default();
    let Some(f) = check.fields(doc, "", &["journey", "since"]) else {
        return Err(check.problems);
    };
    let journey = check
        .required(&f, "journey")
        .and_then(|j| match crate::journey::parse(j) {
            Ok(j) => Some(std::sync::Arc::new(j)),
            Err(problems) => {
                check
                    .problems
                    .extend(problems.into_iter().map(|p| p.under("/journey")));
                None
            }
        });
    let since = check.required_string(&f, "since").and_then(|s| {
        let ms = crate::journey::parse_offset(&s).filter(|ms| *ms > 0);
        if ms.is_none() {
            check.report(
                "/since",
                format!("bad period \"{s}\": a duration such as \"7d\""),
            );
        }
        ms
    });
    check.finish(
        journey
            .zip(since)
            .map(|(journey, since_ms)| Backtest { journey, since_ms }),
    )
}

pub(super) async fn backtest(app: &App, req: Request<Incoming>) -> Response<Body> {
    let streaming = query_pairs(req.uri().query())
        .iter()
        .any(|(k, v)| k == "stream" && (v == "1" || v == "true"));
    let doc = match json_body(req).await {
        Ok(d) => d,
        Err(resp) => return resp,
    };
    let request = match parse(&doc) {
        Ok(r) => r,
        Err(problems) => return invalid("invalid_backtest", &problems),
    };
    let end = app.now();
    let start = end.saturating_sub(request.since_ms);
    let input = request.journey;
    let db = app.store.path().to_path_buf();
    let max_active = app.max_active;
    if !streaming {
        let done =
            tokio::task::spawn_blocking(move || run(&db, input, start, end, max_active, |_, _| ()))
                .await
                .expect("backtest panicked");
        return match done {
            Ok(result) => json_response(StatusCode::OK, &result),
            Err(e) => store_error(e),
        };
    }
    // Streamed: progress as it goes, then the result (or the error) as the last event.
    let (mut tx, body) =
        http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(16);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut send = |event: &str, data: &Value| {
            let frame = Bytes::from(format!("event: {event}\ndata: {data}\n\n"));
            runtime.block_on(tx.send(Frame::data(frame))).is_ok()
        };
        let done = run(&db, input, start, end, max_active, |done, total| {
            send("progress", &json!({"done": done, "total": total}));
        });
        match done {
            Ok(result) => send("result", &result),
            Err(e) => {
                tracing::error!(error = %e, "backtest failed");
                send(
                    "error",
                    &json!({"message": "the backtest failed (details are in the server log)"}),
                )
            }
        };
    });
    let mut resp = Response::new(body.boxed());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    resp
}

/// Runs a backtest of `journey` over the database at `db` from `start` to `end`, with the
/// destinations' frequency caps of the same snapshot; `progress` hears (done, total) every so
/// often. Also what `journeyd backtest` runs.
pub(crate) fn run(
    db: &std::path::Path,
    journey: std::sync::Arc<crate::journey::Journey>,
    start: i64,
    end: i64,
    max_active: usize,
    mut progress: impl FnMut(u64, u64),
) -> crate::store::Result<Value> {
    let started = std::time::Instant::now();
    let events = crate::store::StoredEvents::open(db, start)?;
    let input = &crate::sim::Input {
        journey,
        traits: Default::default(),
        events: Vec::new(),
        start,
        caps: events.caps()?,
    };
    let total = events.count()?;
    progress(0, total);
    let mut bt = crate::sim::Backtest::new(input, max_active);
    events.for_each(|e| {
        bt.replay(e);
        if bt.replayed().is_multiple_of(PROGRESS_EVERY) {
            progress(bt.replayed(), total);
        }
    })?;
    let result = bt.finish(end);
    progress(result.events, total);
    Ok(views::backtest(
        input,
        &result,
        start,
        end,
        started.elapsed(),
    ))
}
