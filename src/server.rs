//! Wires the appliance together: opens the store (which takes the database's process lock and
//! checks the file), binds the listener, makes sure keys exist, and serves HTTP until the
//! shutdown future resolves; then drains connections, stops the background tasks, and lets the
//! writer commit what is queued.
//!
//! Start-up order matters (SPEC §9): the admin token and write key are generated and printed
//! only once the database is open and the port is bound, so a start that fails uses nothing up.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::api::App;
use crate::clock::Clock;
use crate::config::ServeArgs;
use crate::store::{Store, StoreOptions};

/// Generates an admin token or write key: 32 random bytes, URL-safe base64.
pub(crate) fn generate_secret() -> String {
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
    let db = &args.db.db;
    let store = Store::open(db, clock, options)
        .with_context(|| format!("opening database {}", db.display()))?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
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
    let counts = store.counts().await.context("reading the database")?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        db = %db.display(),
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

    let app = App::new(
        store.clone(),
        keys,
        max_active,
        args.max_queued_bytes as usize,
    );
    crate::api::serve(app, listener, args.max_connections as usize, shutdown).await;
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
    Ok(())
}
