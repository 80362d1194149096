//! The `journeyd` command line: parse, set up logging, call into the library.
//! Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.

use std::process::ExitCode;

use clap::Parser;
use journeyd::config::{Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help and version to stdout with exit 0, usage errors to stderr with 2.
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Backup(args) => backup(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("journeyd: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn serve(args: journeyd::config::ServeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(journeyd::server::serve(args, shutdown_signal()))
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn backup(args: journeyd::config::BackupArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut last_report = std::time::Instant::now();
    journeyd::store::backup_to(&args.db.db, &args.dest, &mut |done, total| {
        if last_report.elapsed().as_secs() >= 1 {
            eprintln!("backup: {done}/{total} pages");
            last_report = std::time::Instant::now();
        }
    })?;
    let size = std::fs::metadata(&args.dest).map(|m| m.len()).unwrap_or(0);
    println!("backup written to {} ({size} bytes) in {:.1?}", args.dest.display(), started.elapsed());
    Ok(())
}
