//! `journeyd push PATH...`: uploads destinations and journeys from files and directories
//! (SPEC §8).
//!
//! - A directory is searched recursively for `*.json` files (hidden entries skipped), in path
//!   order; a file named on the command line is read whatever its name.
//! - A document with `steps` is a journey (its id is its `id`); otherwise one with a `type` is a
//!   destination (its id is its `id` field, which is removed before the upload since the
//!   destination API takes the id from the URL, else the file name without `.json`).
//! - Every file is read and validated first, with the product's own parsers
//!   ([`crate::journey::parse`], [`crate::delivery::parse`]); if any is invalid, its problems
//!   are printed with their JSON paths and nothing is uploaded. Then destinations go first,
//!   then journeys, so that a journey's send steps find their destinations.
//! - Per file: `created`, `updated` or `unchanged`. A journey is compared by its version: `PUT`
//!   answers `201` (created), or `200` with the same version (unchanged: the server keeps no
//!   new version of the same body) or a newer one (updated). A destination is compared before
//!   the upload, by `GET`, with what would be stored; an unchanged one is not uploaded. Its
//!   write-only values (`secret`, `write_key`, header values, a password in the URL) are never
//!   shown by the server, so a destination that sets one always counts as updated.
//! - `--dry-run` does the same reading and comparing and writes nothing; it also checks that
//!   each send step's destination exists on the server or in the push (there is no server-side
//!   dry run: the server's `422` for an unknown destination is what this anticipates).
//! - A file the server refuses (`422`) is listed with the server's problems; the others go on,
//!   and the exit is 1.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{Value, json};

use super::client::{Api, ApiError, seg};
use crate::config::PushArgs;
use crate::delivery::MASK;
use crate::journey::{Problem, StepKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Destination,
    Journey,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Destination => "destination",
            Kind::Journey => "journey",
        }
    }

    fn path(self, id: &str) -> String {
        match self {
            Kind::Destination => format!("/v1/destinations/{}", seg(id)),
            Kind::Journey => format!("/v1/journeys/{}", seg(id)),
        }
    }
}

/// One file, read and validated.
struct Doc {
    file: String,
    kind: Kind,
    id: String,
    /// What is uploaded.
    body: Value,
    /// Destination ids of the journey's send steps, with their JSON paths.
    sends: Vec<(String, String)>,
    /// For a destination: what would be stored in the clear, and whether it sets write-only
    /// values, which cannot be compared.
    stored: Option<(Value, bool)>,
}

/// What happened to a file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Created,
    Updated,
    Unchanged,
    Failed(Vec<String>),
}

/// What is printed for one file.
struct Report {
    doc_file: String,
    kind: Kind,
    id: String,
    result: Change,
    version: Option<i64>,
    note: Option<&'static str>,
}

pub(super) fn run(args: PushArgs) -> anyhow::Result<ExitCode> {
    let api = Api::admin(&args.remote)?;
    let files = collect(&args.paths)?;
    if files.is_empty() {
        anyhow::bail!("no .json files found in {}", list(&args.paths));
    }
    let mut docs = Vec::new();
    let mut invalid: Vec<(String, Vec<String>)> = Vec::new();
    for file in &files {
        match read(file) {
            Ok(doc) => docs.push(doc),
            Err(problems) => invalid.push((file.display().to_string(), problems)),
        }
    }
    invalid.extend(duplicates(&docs));
    if !invalid.is_empty() {
        if args.remote.json {
            let files: Vec<Value> = invalid
                .iter()
                .map(|(f, p)| json!({"file": f, "result": "invalid", "problems": p}))
                .collect();
            super::table::print_json(&json!({"dry_run": args.dry_run, "files": files}));
        } else {
            for (file, problems) in &invalid {
                for p in problems {
                    println!("{file}: {p}");
                }
            }
        }
        anyhow::bail!(
            "{} of {} files are not valid: nothing was pushed",
            invalid.len(),
            files.len()
        );
    }
    // Destinations first, each kind in path order.
    docs.sort_by_key(|d| d.kind == Kind::Journey);
    let pushed_destinations: Vec<String> = docs
        .iter()
        .filter(|d| d.kind == Kind::Destination)
        .map(|d| d.id.clone())
        .collect();
    let mut reports = Vec::new();
    let mut known_destinations: HashMap<String, bool> = HashMap::new();
    for doc in &docs {
        let current = api.get_opt(&doc.kind.path(&doc.id))?;
        let report = if args.dry_run {
            let mut problems = Vec::new();
            for (path, dest) in &doc.sends {
                let exists = match known_destinations.get(dest) {
                    Some(e) => *e,
                    None => {
                        let e = pushed_destinations.contains(dest)
                            || api.get_opt(&Kind::Destination.path(dest))?.is_some();
                        known_destinations.insert(dest.clone(), e);
                        e
                    }
                };
                if !exists {
                    problems.push(format!("{path}: unknown destination \"{dest}\""));
                }
            }
            if let Some(p) = segment_without_key(doc, current.as_ref()) {
                problems.push(p);
            }
            let (result, note) = if problems.is_empty() {
                planned(doc, current.as_ref())
            } else {
                (Change::Failed(problems), None)
            };
            Report {
                doc_file: doc.file.clone(),
                kind: doc.kind,
                id: doc.id.clone(),
                result,
                version: current.as_ref().and_then(|c| c["version"].as_i64()),
                note,
            }
        } else {
            push(&api, doc, current.as_ref())?
        };
        if !args.remote.json {
            print(&report, args.dry_run);
        }
        reports.push(report);
    }
    let failed = reports
        .iter()
        .filter(|r| matches!(r.result, Change::Failed(_)))
        .count();
    if args.remote.json {
        let files: Vec<Value> = reports.iter().map(report_json).collect();
        super::table::print_json(&json!({"dry_run": args.dry_run, "files": files}));
    } else if args.dry_run && failed == 0 {
        println!("dry run: nothing was written");
    }
    if failed > 0 {
        let what = if args.dry_run {
            "would be refused"
        } else {
            "were refused"
        };
        anyhow::bail!("{failed} of {} files {what}", reports.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// Uploads one document and says what changed. The server refusing it (`422`, `409`) is a
/// failed file; anything else (unreachable, a bad token) ends the command.
fn push(api: &Api, doc: &Doc, current: Option<&Value>) -> anyhow::Result<Report> {
    let mut report = Report {
        doc_file: doc.file.clone(),
        kind: doc.kind,
        id: doc.id.clone(),
        result: Change::Unchanged,
        version: None,
        note: None,
    };
    if doc.kind == Kind::Destination {
        let (result, note) = planned(doc, current);
        report.note = note;
        if result == Change::Unchanged {
            return Ok(report);
        }
        report.result = result;
    }
    let answer = match api.call("PUT", &doc.kind.path(&doc.id), Some(&doc.body)) {
        Ok(a) => a,
        Err(e) => match e.downcast::<ApiError>() {
            Ok(refused) if matches!(refused.status, 400 | 409 | 422) => {
                let mut problems: Vec<String> = refused
                    .details
                    .iter()
                    .map(|(path, message)| {
                        let path = if path.is_empty() { "/" } else { path };
                        format!("{path}: {message}")
                    })
                    .collect();
                if problems.is_empty() {
                    problems.push(refused.message.clone());
                }
                if let Some(n) = refused.truncated {
                    problems.push(format!("... and {n} more"));
                }
                report.result = Change::Failed(problems);
                return Ok(report);
            }
            Ok(other) => return Err(other.into()),
            Err(e) => return Err(e),
        },
    };
    if doc.kind == Kind::Journey {
        let version = answer.body["version"].as_i64();
        report.version = version;
        report.result = if answer.status == 201 || current.is_none() {
            Change::Created
        } else if current.and_then(|c| c["version"].as_i64()) != version {
            Change::Updated
        } else if current.is_some_and(|c| c["status"] == "archived") {
            report.note = Some("published again after it was archived");
            Change::Updated
        } else {
            Change::Unchanged
        };
    }
    Ok(report)
}

/// What an upload would do, from what the server has now.
fn planned(doc: &Doc, current: Option<&Value>) -> (Change, Option<&'static str>) {
    let Some(current) = current else {
        return (Change::Created, None);
    };
    match (doc.kind, &doc.stored) {
        (Kind::Journey, _) => {
            if current["definition"] != doc.body {
                (Change::Updated, None)
            } else if current["status"] == "archived" {
                (
                    Change::Updated,
                    Some("published again after it was archived"),
                )
            } else {
                (Change::Unchanged, None)
            }
        }
        (Kind::Destination, Some((stored, write_only))) => {
            if *write_only {
                return (
                    Change::Updated,
                    Some(
                        "sets write-only values (secret, keys, header values), which cannot be compared",
                    ),
                );
            }
            let shown = destination_settings(current);
            let cleared = crate::delivery::SECRET_FIELDS.iter().any(|f| {
                doc.body.get(*f).is_some_and(Value::is_null) && current[format!("{f}_set")] == true
            });
            if shown != *stored || cleared {
                (Change::Updated, None)
            } else {
                (Change::Unchanged, None)
            }
        }
        (Kind::Destination, None) => (Change::Updated, None),
    }
}

/// A destination as `GET` shows it, without what the server adds (id, times, `*_set`).
fn destination_settings(shown: &Value) -> Value {
    let mut v = shown.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("id");
        m.remove("created_at");
        m.remove("updated_at");
        for f in crate::delivery::SECRET_FIELDS {
            m.remove(&format!("{f}_set"));
        }
    }
    v
}

/// A segment destination needs a write key, given or already stored (the server checks this
/// too; a dry run says it beforehand).
fn segment_without_key(doc: &Doc, current: Option<&Value>) -> Option<String> {
    let segment = doc.kind == Kind::Destination && doc.body["type"] == "segment";
    let given = doc.body["write_key"].is_string();
    let stored =
        current.is_some_and(|c| c["write_key_set"] == true) && doc.body.get("write_key").is_none();
    (segment && !given && !stored)
        .then(|| "/write_key: a segment destination needs a \"write_key\"".to_string())
}

/// Reads, classifies and validates one file; its problems with their JSON paths otherwise.
fn read(file: &Path) -> Result<Doc, Vec<String>> {
    let text = std::fs::read_to_string(file).map_err(|e| vec![format!("cannot read: {e}")])?;
    let mut body: Value =
        serde_json::from_str(&text).map_err(|e| vec![format!("not valid JSON: {e}")])?;
    let shown = |problems: Vec<Problem>| -> Vec<String> {
        problems.iter().map(|p| p.to_string()).collect()
    };
    let name = file.display().to_string();
    if !body.is_object() {
        return Err(vec!["/: expected a journey or destination object".into()]);
    }
    if body.get("steps").is_some() {
        let journey = crate::journey::parse(&body).map_err(shown)?;
        let sends = journey
            .steps
            .iter()
            .enumerate()
            .filter_map(|(n, step)| match &step.kind {
                StepKind::Send { destination, .. } => {
                    Some((format!("/steps/{n}/destination"), destination.clone()))
                }
                _ => None,
            })
            .collect();
        return Ok(Doc {
            file: name,
            kind: Kind::Journey,
            id: journey.id.clone(),
            body,
            sends,
            stored: None,
        });
    }
    if body.get("type").is_none() {
        return Err(vec![
            "/: neither a journey (it has no \"steps\") nor a destination (it has no \"type\")"
                .into(),
        ]);
    }
    let id = destination_id(&mut body, file)?;
    let parsed = crate::delivery::parse(&body).map_err(shown)?;
    let dest = &parsed.destination;
    let write_only = parsed.secrets.values().any(Value::is_string)
        || dest.headers.values().any(|v| v != MASK)
        || crate::delivery::mask_password(&dest.url) != dest.url;
    Ok(Doc {
        file: name,
        kind: Kind::Destination,
        id,
        stored: Some((dest.public(), write_only)),
        body,
        sends: Vec::new(),
    })
}

/// Two files that would upload the same id.
fn duplicates(docs: &[Doc]) -> Vec<(String, Vec<String>)> {
    let mut seen: HashMap<(Kind, &str), &str> = HashMap::new();
    let mut out = Vec::new();
    for doc in docs {
        if let Some(first) = seen.insert((doc.kind, &doc.id), &doc.file) {
            out.push((
                doc.file.clone(),
                vec![format!(
                    "/: {} \"{}\" is also in {first}",
                    doc.kind.as_str(),
                    doc.id
                )],
            ));
        }
    }
    out
}

/// The files to push: each file named, and the `*.json` files under each directory named,
/// recursively, in path order, hidden entries skipped.
fn collect(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        let meta =
            std::fs::metadata(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut found)?;
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() || (kind.is_symlink() && path.is_dir()) {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    Ok(())
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn result_word(r: &Change, dry_run: bool) -> &'static str {
    match (r, dry_run) {
        (Change::Created, false) => "created",
        (Change::Created, true) => "would be created",
        (Change::Updated, false) => "updated",
        (Change::Updated, true) => "would be updated",
        (Change::Unchanged, _) => "unchanged",
        (Change::Failed(_), false) => "refused",
        (Change::Failed(_), true) => "would be refused",
    }
}

/// `FILE: journey ID created (version 1)`, with the problems of a refused file under it.
fn print(r: &Report, dry_run: bool) {
    let mut line = format!(
        "{}: {} {} {}",
        r.doc_file,
        r.kind.as_str(),
        r.id,
        result_word(&r.result, dry_run)
    );
    if let (Some(v), false) = (r.version, dry_run) {
        line.push_str(&format!(" (version {v})"));
    }
    if let Some(note) = r.note {
        line.push_str(&format!(": {note}"));
    }
    if let Change::Failed(problems) = &r.result {
        line.push(':');
        for p in problems {
            line.push_str(&format!("\n  {p}"));
        }
    }
    println!("{line}");
}

fn report_json(r: &Report) -> Value {
    let result = match &r.result {
        Change::Created => "created",
        Change::Updated => "updated",
        Change::Unchanged => "unchanged",
        Change::Failed(_) => "refused",
    };
    let mut v = json!({"file": r.doc_file, "kind": r.kind.as_str(), "id": r.id, "result": result});
    if let Some(n) = r.version {
        v["version"] = json!(n);
    }
    if let Some(note) = r.note {
        v["note"] = json!(note);
    }
    if let Change::Failed(p) = &r.result {
        v["problems"] = json!(p);
    }
    v
}

/// A destination document's id, taken out of it: its `id` field, else the file name without
/// `.json` (the API takes the id from the URL, not the body).
pub(super) fn destination_id(body: &mut Value, file: &Path) -> Result<String, Vec<String>> {
    let id = match body.as_object_mut().and_then(|m| m.remove("id")) {
        Some(Value::String(id)) => id,
        Some(other) => return Err(vec![format!("/id: expected a string, got {other}")]),
        None => file
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.strip_suffix(".json").unwrap_or(n).to_string())
            .unwrap_or_default(),
    };
    if !crate::delivery::valid_id(&id) {
        return Err(vec![format!(
            "/id: destination id \"{id}\" (its \"id\", else the file name) must be 1 to 64 of A-Z a-z 0-9 _ - ."
        )]);
    }
    Ok(id)
}
