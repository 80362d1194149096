//! The commands of the `journeyd` binary (SPEC §1, §8), each taking its parsed arguments:
//! `serve` runs the appliance; `check`, `simulate` and `backup` work offline; `restore` works on
//! a stopped server's database file; the operator commands (`push`, `journeys`, `profiles`,
//! `deliveries`, `tail`, `replay`, `keys`) are clients of a running server's HTTP API
//! (`client.rs`). Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.

mod client;
mod diagram;
mod operate;
mod progress;
mod push;
mod replay;
mod restore;
mod table;
mod tail;

use std::process::ExitCode;

use crate::config::Command;

/// Runs one command to its end and says how the process should exit.
pub fn run(command: Command) -> ExitCode {
    let result = match command {
        Command::Serve(args) => serve(args).map(|()| ExitCode::SUCCESS),
        Command::Backup(args) => backup(args).map(|()| ExitCode::SUCCESS),
        Command::Check(args) => Ok(check(args)),
        Command::Simulate(args) => simulate(args),
        Command::Backtest(args) => backtest(args),
        Command::Push(args) => push::run(args),
        Command::Journeys(cmd) => operate::journeys(cmd),
        Command::Profiles(cmd) => operate::profiles(cmd),
        Command::Deliveries(cmd) => operate::deliveries(cmd),
        Command::Keys(cmd) => operate::keys(cmd),
        Command::Tail(args) => tail::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Restore(args) => restore::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("journeyd: {e:#}");
            if e.downcast_ref::<crate::config::ConfigError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn serve(args: crate::config::ServeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(crate::server::serve(
        args,
        std::sync::Arc::new(crate::clock::SystemClock),
        |addr| println!("listening on {addr}"),
        shutdown_signal(),
    ))
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

fn backup(args: crate::config::BackupArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut bar = progress::Bar::new("pages");
    let replace = if args.force {
        crate::store::Replace::Anything
    } else {
        crate::store::Replace::Backups
    };
    crate::store::backup_to(&args.db.db, &args.dest, replace, &mut |done, total| {
        bar.show(done, total)
    })?;
    bar.finish();
    let size = std::fs::metadata(&args.dest).map(|m| m.len()).unwrap_or(0);
    println!(
        "backup written to {} ({size} bytes) in {:.1?}",
        args.dest.display(),
        started.elapsed()
    );
    Ok(())
}

/// Validates each file; prints `FILE: ok` or one line per problem.
fn check(args: crate::config::CheckArgs) -> ExitCode {
    let mut all_valid = true;
    for file in &args.files {
        let name = file.display();
        let doc = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read: {e}"))
            .and_then(|text| {
                serde_json::from_str::<serde_json::Value>(&text)
                    .map_err(|e| format!("not valid JSON: {e}"))
            });
        match doc.map(|d| crate::journey::parse(&d)) {
            Ok(Ok(_)) => println!("{name}: ok"),
            Ok(Err(problems)) => {
                all_valid = false;
                for p in problems {
                    println!("{name}: {p}");
                }
            }
            Err(e) => {
                all_valid = false;
                println!("{name}: {e}");
            }
        }
    }
    if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Runs a simulation and prints its trace as JSON, the same as `POST /v1/simulate` answers.
fn backtest(args: crate::config::BacktestArgs) -> anyhow::Result<ExitCode> {
    use crate::clock::Clock;
    use anyhow::Context;
    let Some(since) = crate::journey::parse_offset(&args.since).filter(|ms| *ms > 0) else {
        return Err(crate::config::ConfigError(format!(
            "--since \"{}\": a duration such as 7d, 12h or 90m",
            args.since
        ))
        .into());
    };
    let name = args.file.display();
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&args.file).with_context(|| format!("reading {name}"))?,
    )
    .with_context(|| format!("{name} is not valid JSON"))?;
    let journey = match crate::journey::parse(&doc) {
        Ok(j) => std::sync::Arc::new(j),
        Err(problems) => {
            for p in problems {
                println!("{name}: {p}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    let end = crate::clock::SystemClock.now_ms();
    let mut bar = progress::Bar::new("events");
    let result = crate::api::backtest::run(
        &args.db.db,
        journey,
        end - since,
        end,
        args.max_active_per_profile,
        |done, total| bar.show(done, total),
    )?;
    bar.finish();
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(ExitCode::SUCCESS)
}

fn simulate(args: crate::config::SimulateArgs) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    use serde_json::{Value, json};
    let journey: Value = serde_json::from_str(
        &std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?,
    )
    .with_context(|| format!("{} is not valid JSON", args.file.display()))?;
    let text = std::fs::read_to_string(&args.events)
        .with_context(|| format!("reading {}", args.events.display()))?;
    let mut events = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event: Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not valid JSON", args.events.display(), n + 1))?;
        events.push(event);
    }
    let traits: Value = match &args.traits {
        Some(t) => serde_json::from_str(t).context("--traits is not valid JSON")?,
        None => json!({}),
    };
    let mut doc = json!({"journey": journey, "traits": traits, "events": events});
    if let Some(start) = &args.start {
        doc["start"] = json!(start);
    }
    let mut caps = std::collections::HashMap::new();
    for file in &args.destinations {
        let mut body: Value = serde_json::from_str(
            &std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?,
        )
        .with_context(|| format!("{} is not valid JSON", file.display()))?;
        let parsed = push::destination_id(&mut body, file).and_then(|id| {
            crate::delivery::parse(&body)
                .map(|doc| (id, doc.destination.frequency_cap))
                .map_err(|problems| problems.iter().map(ToString::to_string).collect())
        });
        match parsed {
            Ok((id, cap)) => {
                if let Some(cap) = cap {
                    caps.insert(id, cap);
                }
            }
            Err(problems) => {
                for p in problems {
                    println!("{}: {p}", file.display());
                }
                return Ok(ExitCode::from(1));
            }
        }
    }
    match crate::sim::parse(&doc) {
        Ok(mut input) => {
            input.caps = caps;
            let out = crate::sim::run(&input, args.max_active_per_profile);
            println!(
                "{}",
                serde_json::to_string_pretty(&crate::api::views::simulation(&out))?
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            for p in problems {
                println!("{p}");
            }
            Ok(ExitCode::from(1))
        }
    }
}
