//! Connections (SPEC §9): the accept loop with its connection cap, and the timeouts that keep a
//! slow or stalled client from holding anything but its own connection, and that only briefly.
//!
//! HTTP/1.1 only (Segment SDKs and browsers speak it to a plain-HTTP endpoint; HTTP/2 would need
//! TLS or prior knowledge, which no client here uses). Each connection's socket is wrapped in a
//! [`Guarded`] stream that knows, from the service, whether a request is in progress:
//! - between requests, a request's headers must arrive within [`HEADERS`] of its first byte (of
//!   the connection's start, for the first request), and an idle keep-alive connection closes
//!   after [`IDLE`];
//! - a request's body must arrive within [`BODY`] (enforced where the body is read);
//! - a response the client does not read for [`WRITE`] ends the connection.
//!
//! A timed-out read or write fails with `TimedOut`, which ends hyper's connection future and
//! closes the socket.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Request;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

use super::{App, Body};

/// A request's headers must arrive within this of its first byte.
pub(crate) const HEADERS: Duration = Duration::from_secs(10);
/// A request's body must arrive within this.
pub(crate) const BODY: Duration = Duration::from_secs(60);
/// An idle keep-alive connection closes after this.
pub(crate) const IDLE: Duration = Duration::from_secs(75);
/// A response the client does not take for this long ends the connection.
const WRITE: Duration = Duration::from_secs(60);
/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves HTTP on `listener` until `shutdown` resolves, at most `max_connections` at once (more
/// wait in the kernel's accept queue), then waits (up to [`DRAIN`]) for in-flight requests.
pub(crate) async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut http = http1::Builder::new();
    // No timer for hyper itself: its header timeout would also cut idle keep-alive connections
    // at its own length. `Guarded` keeps both limits.
    http.keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::new(ConnState::default());
        let io = TokioIo::new(Guarded::new(stream, state.clone()));
        let app = app.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let app = app.clone();
            let state = state.clone();
            state.request_started();
            async move {
                let resp = app.handle(req).await?;
                Ok::<_, std::convert::Infallible>(resp.map(|body| {
                    http_body_util::BodyExt::boxed(Tracked {
                        body,
                        state: Some(state),
                    })
                }))
            }
        });
        let conn = graceful.watch(http.serve_connection(io, service));
        // Connection tasks are owned by `graceful`, which waits for them below; the permit goes
        // with the connection.
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    app.stop_streams();
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within {DRAIN:?}");
    }
}

/// What the service tells a connection's stream: whether a request is in progress, and since
/// when the connection waits for the next one.
#[derive(Debug)]
struct ConnState {
    in_flight: AtomicUsize,
    /// When the connection started waiting for a request, and when that request's first byte
    /// arrived.
    waiting: Mutex<(Instant, Option<Instant>)>,
    /// Whether a request has been served on this connection.
    served: std::sync::atomic::AtomicBool,
}

impl Default for ConnState {
    fn default() -> ConnState {
        ConnState {
            in_flight: AtomicUsize::new(0),
            waiting: Mutex::new((Instant::now(), None)),
            served: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl ConnState {
    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.served.store(true, Ordering::Release);
    }

    fn request_done(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.waiting.lock().unwrap() = (Instant::now(), None);
        }
    }

    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let mut w = self.waiting.lock().unwrap();
            if w.1.is_none() {
                w.1 = Some(Instant::now());
            }
        }
    }

    /// When a read waiting for a request gives up; `None` while a request is in progress.
    fn read_deadline(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let (since, first_byte) = *self.waiting.lock().unwrap();
        Some(match first_byte {
            Some(first) => first + HEADERS,
            // The first request's headers count from the connection's start.
            None if !self.served.load(Ordering::Acquire) => since + HEADERS,
            None => since + IDLE,
        })
    }
}

/// A response body that tells the connection when the response is done (sent or dropped).
struct Tracked {
    body: Body,
    state: Option<Arc<ConnState>>,
}

impl Tracked {
    fn done(&mut self) {
        if let Some(state) = self.state.take() {
            state.request_done();
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.done();
    }
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            self.done();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A socket with the read and write deadlines of the module documentation.
struct Guarded {
    stream: TcpStream,
    state: Arc<ConnState>,
    read_timer: Option<(Instant, Pin<Box<Sleep>>)>,
    /// Since when writes have made no progress, and the timer for it.
    write_stall: Option<Pin<Box<Sleep>>>,
}

impl Guarded {
    fn new(stream: TcpStream, state: Arc<ConnState>) -> Guarded {
        Guarded {
            stream,
            state,
            read_timer: None,
            write_stall: None,
        }
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.state.bytes_read();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let Some(deadline) = self.state.read_deadline() else {
                    self.read_timer = None;
                    return Poll::Pending;
                };
                let timer = match &mut self.read_timer {
                    Some((at, sleep)) if *at == deadline => sleep,
                    slot => {
                        *slot = Some((deadline, Box::pin(tokio::time::sleep_until(deadline))));
                        &mut slot.as_mut().expect("just set").1
                    }
                };
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(timed_out("waiting for a request"))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.stalled(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.stalled(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.stream).poll_flush(cx);
        self.stalled(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Guarded {
    /// Fails a write that has made no progress for [`WRITE`].
    fn stalled<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.write_stall = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timer = self
                    .write_stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(timed_out("sending the response"))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}
