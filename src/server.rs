//! Wires the appliance together: opens the store, makes sure keys exist, binds the listener, and
//! serves HTTP until the shutdown future resolves; then drains connections and the writer.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::api::App;
use crate::clock::Clock;
use crate::config::ServeArgs;
use crate::store::{Store, StoreOptions};

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Generates an admin token or write key: 32 random bytes, URL-safe base64.
fn generate_secret() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Runs `journeyd serve` until `shutdown` resolves, on `clock` (the system clock, or a manual
/// one in tests: the scheduler and the dispatcher sleep through it). `listening` is told the
/// bound address once the server accepts connections.
pub async fn serve(
    args: ServeArgs,
    clock: Arc<dyn Clock>,
    listening: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    args.validate()?;
    let housekeeping_settings = args.housekeeping();
    let max_active = args.max_active_per_profile;
    let options = StoreOptions {
        max_active,
        sync: match args.sync {
            crate::config::SyncArg::Normal => crate::store::Sync::Normal,
            crate::config::SyncArg::Full => crate::store::Sync::Full,
        },
        ..StoreOptions::default()
    };
    let store = Store::open(&args.db.db, clock, options)
        .with_context(|| format!("opening database {}", args.db.db.display()))?;
    let (keys, generated) = store
        .ensure_keys(
            args.admin_token.into_iter().collect(),
            args.write_keys,
            generate_secret,
        )
        .await
        .context("storing keys")?;
    // Printed once, on the start that generated them: only their digests are stored.
    if let Some(token) = &generated.admin_token {
        println!("admin token: {token}");
    }
    if let Some(key) = &generated.write_key {
        println!("write key: {key}");
    }
    if generated.admin_token.is_some() || generated.write_key.is_some() {
        println!("(generated on first start and printed only now: keep them somewhere safe)");
    }

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let counts = store.counts().await.context("reading the database")?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        db = %args.db.db.display(),
        listen = %addr,
        journeys = counts.journeys,
        pending_timers = counts.timers,
        "journeyd started"
    );
    listening(addr);

    let housekeeping =
        crate::housekeeping::Housekeeping::start(store.clone(), housekeeping_settings)
            .await
            .context("starting housekeeping jobs")?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let scheduler = tokio::spawn(crate::scheduler::run(store.clone(), stopped.clone()));
    let delivery = tokio::spawn(crate::delivery::worker::run(store.clone(), stopped));

    let app = App::new(store.clone(), keys, max_active);
    let result = run(app, listener, shutdown).await;
    // Requests are done: stop the background tasks, then let the writer commit what is queued.
    let _ = stop.send(true);
    housekeeping.stop().await;
    for (name, task) in [("scheduler", scheduler), ("delivery", delivery)] {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "{name} task failed");
        }
    }
    store.writer().shutdown().await;
    tracing::info!("journeyd stopped");
    result
}

/// Serves HTTP on `listener` until `shutdown` resolves, then waits (up to [`DRAIN_TIMEOUT`]) for
/// in-flight requests to finish.
async fn run(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Running out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let service = service_fn(move |req| app.clone().handle(req));
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                // Connection tasks are owned by `graceful`, which waits for them below.
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}");
    }
    Ok(())
}
