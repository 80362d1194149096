//! Packaging (`packaging/` and `[package.metadata.deb]` in Cargo.toml) against the binary it packages.
//!
//! The fast tests always run: the unit starts the binary Cargo builds, every `JOURNEYD_*` name in the
//! unit, the environment file and the Containerfile is a setting `journeyd serve` reads (taken from
//! its `--help`, which clap writes from the same definitions that parse the settings), the
//! environment file lists every such setting with the default in effect, and the Debian package's
//! assets exist. The settings drift with the code; these files are edited by hand, so this is where
//! a renamed or added setting shows up.
//!
//! `JOURNEYD_DEB_TEST=1` also builds the `.deb` with cargo-deb (a release build, minutes), checks its
//! contents and conffiles with dpkg-deb, unpacks it into a scratch root, runs the unpacked binary and,
//! where systemd-analyze exists, verifies the unpacked unit against the unpacked binary.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{describe, temp_dir};

/// The package, its binary and the files under test, by the names the packaging uses for them.
const PACKAGE: &str = env!("CARGO_PKG_NAME");
const UNIT: &str = "packaging/journeyd.service";
const ENV_FILE: &str = "packaging/journeyd.env";
const CONTAINERFILE: &str = "packaging/Containerfile";
/// Where the package installs the environment file; the unit's `EnvironmentFile=` must name it.
const ENV_FILE_INSTALLED: &str = "/etc/journeyd/journeyd.env";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// The binary under test, with none of the caller's `JOURNEYD_*` variables, so that `--help` shows
/// the binary's own defaults.
fn journeyd(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_journeyd"));
    cmd.args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("JOURNEYD_") {
            cmd.env_remove(name);
        }
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run journeyd {args:?}: {e}"))
}

/// Every `JOURNEYD_*` variable `journeyd serve` reads, with its default when it has one, as its
/// `--help` lists them: `[env: JOURNEYD_LISTEN=] [default: 127.0.0.1:8787]`.
fn serve_settings() -> BTreeMap<String, Option<String>> {
    let out = journeyd(&["serve", "--help"]);
    assert!(out.status.success(), "{}", describe(&out));
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let settings = parse_help(&help);
    assert!(
        settings.contains_key("JOURNEYD_LISTEN") && settings.contains_key("JOURNEYD_DB"),
        "found no [env: ...] entries in `journeyd serve --help` (has clap's format changed?):\n{help}"
    );
    settings
}

/// One block per option (a line starting with `-` after indentation, then its description), each
/// holding at most one `[env: NAME=...]` and one `[default: VALUE]`.
fn parse_help(help: &str) -> BTreeMap<String, Option<String>> {
    let mut blocks: Vec<String> = Vec::new();
    for line in help.lines() {
        if line.trim_start().starts_with('-') || blocks.is_empty() {
            blocks.push(String::new());
        }
        let block = blocks.last_mut().expect("pushed above");
        block.push_str(line.trim());
        block.push(' ');
    }
    let mut settings = BTreeMap::new();
    for block in &blocks {
        let Some(at) = block.find("[env: ") else {
            continue;
        };
        let rest = &block[at + "[env: ".len()..];
        let name = rest[..rest.find('=').expect("[env: NAME=")].to_string();
        let default = block.find("[default: ").map(|at| {
            let rest = &block[at + "[default: ".len()..];
            unquote(&rest[..rest.find(']').expect("[default: ...]")]).to_string()
        });
        settings.insert(name, default);
    }
    settings
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

/// Every `JOURNEYD_` name mentioned anywhere in a text, comments included.
fn journeyd_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("JOURNEYD_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The `KEY=value` lines of a systemd unit, in order (keys such as `Environment=` repeat).
fn unit_entries(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with('#') && !l.starts_with(';') && !l.starts_with('[')
        })
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn unit_value<'a>(entries: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    entries
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The variables the unit sets itself with `Environment=NAME=value` lines.
fn unit_environment(entries: &[(String, String)]) -> BTreeMap<String, String> {
    unit_value(entries, "Environment")
        .into_iter()
        .flat_map(|v| v.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), unquote(v).to_string()))
        .collect()
}

/// `[package.metadata.deb]` as Cargo reads it.
fn deb_metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = Command::new(&cargo)
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .arg("--manifest-path")
        .arg(root().join("Cargo.toml"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo} metadata: {e}"));
    assert!(out.status.success(), "{}", describe(&out));
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let package = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == PACKAGE)
        .unwrap_or_else(|| panic!("no package {PACKAGE} in cargo metadata"))
        .clone();
    let bins: Vec<&str> = package["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(
        bins,
        [PACKAGE],
        "the package builds one binary, named like the package"
    );
    let deb = package["metadata"]["deb"].clone();
    assert!(deb.is_object(), "Cargo.toml has no [package.metadata.deb]");
    deb
}

/// The assets of the package as (source, dest, mode), from either of cargo-deb's two spellings.
fn deb_assets(deb: &Value) -> Vec<(String, String, String)> {
    let field = |a: &Value, i: usize, key: &str| {
        a.get(i)
            .or_else(|| a.get(key))
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("asset {a} has no {key}"))
            .to_string()
    };
    deb["assets"]
        .as_array()
        .expect("[package.metadata.deb] lists its assets")
        .iter()
        .map(|a| {
            (
                field(a, 0, "source"),
                field(a, 1, "dest"),
                field(a, 2, "mode"),
            )
        })
        .collect()
}

/// Where an asset lands in the package: a `dest` ending in `/` is a directory.
fn installed_path(source: &str, dest: &str) -> String {
    let dest = format!("/{}", dest.trim_start_matches('/'));
    if dest.ends_with('/') {
        let name = Path::new(source).file_name().expect("a file name");
        format!("{dest}{}", name.to_string_lossy())
    } else {
        dest
    }
}

#[test]
fn packaging_unit_runs_the_built_binary() {
    let entries = unit_entries(&read(UNIT));
    let exec = unit_value(&entries, "ExecStart");
    assert_eq!(exec.len(), 1, "{UNIT}: one ExecStart= line, got {exec:?}");
    let mut words = exec[0].split_whitespace();
    let program = words.next().expect("ExecStart= names a program");
    let built = Path::new(env!("CARGO_BIN_EXE_journeyd"))
        .file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned();
    assert_eq!(
        Path::new(program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned()),
        Some(built.clone()),
        "{UNIT}: ExecStart={} does not run the binary Cargo builds ({built})",
        exec[0]
    );
    assert_eq!(built, PACKAGE, "the binary is named like the package");
    assert_eq!(
        words.next(),
        Some("serve"),
        "{UNIT}: ExecStart= runs `serve`"
    );

    // The package puts the binary where the unit looks for it.
    let assets = deb_assets(&deb_metadata());
    let binary = assets
        .iter()
        .find(|(source, ..)| source == &format!("target/release/{PACKAGE}"))
        .unwrap_or_else(|| panic!("no deb asset target/release/{PACKAGE} in {assets:?}"));
    assert_eq!(
        installed_path(&binary.0, &binary.1),
        program,
        "the deb installs the binary at ExecStart="
    );

    // The unit reads the file the package installs, and keeps the database where StateDirectory= is.
    assert_eq!(
        unit_value(&entries, "EnvironmentFile"),
        [format!("-{ENV_FILE_INSTALLED}")]
    );
    let state = unit_value(&entries, "StateDirectory");
    assert_eq!(state, [PACKAGE], "{UNIT}: StateDirectory=");
    let db = unit_environment(&entries)
        .get("JOURNEYD_DB")
        .cloned()
        .unwrap_or_default();
    assert!(
        db.starts_with(&format!("/var/lib/{PACKAGE}/")),
        "{UNIT}: JOURNEYD_DB={db:?} is outside the state directory /var/lib/{PACKAGE}, the only place the service may write"
    );
}

#[test]
fn packaging_names_only_settings_the_binary_reads() {
    let settings = serve_settings();
    for file in [UNIT, ENV_FILE, CONTAINERFILE] {
        let unknown: Vec<String> = journeyd_names(&read(file))
            .into_iter()
            .filter(|n| !settings.contains_key(n))
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} names {unknown:?}, which `journeyd serve` does not read; it reads {:?}",
            settings.keys().collect::<Vec<_>>()
        );
    }
}

#[test]
fn packaging_env_file_lists_every_setting_with_its_default() {
    let settings = serve_settings();
    let set_by_unit = unit_environment(&unit_entries(&read(UNIT)));
    let text = read(ENV_FILE);

    // The assignments, commented out or not: `#JOURNEYD_LISTEN=127.0.0.1:8787`.
    let mut assigned: BTreeMap<String, Vec<(bool, String)>> = BTreeMap::new();
    for line in text.lines() {
        let (commented, body) = match line.strip_prefix('#') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, line.trim()),
        };
        let Some((name, value)) = body.split_once('=') else {
            continue;
        };
        if name == "RUST_LOG" || (name.starts_with("JOURNEYD_") && !name.contains(' ')) {
            assigned
                .entry(name.to_string())
                .or_default()
                .push((commented, unquote(value).to_string()));
        }
    }

    let mut problems = Vec::new();
    for (name, default) in &settings {
        match assigned.get(name).map(Vec::as_slice) {
            None => problems.push(format!("{name} is missing")),
            Some([(commented, value)]) => {
                if !commented {
                    problems.push(format!(
                        "{name} is set; the shipped file only documents defaults"
                    ));
                }
                // The value shown is what applies when the line stays commented out: the unit's
                // own setting if it has one, else the binary's default, else nothing.
                let expected = set_by_unit
                    .get(name)
                    .cloned()
                    .or_else(|| default.clone())
                    .unwrap_or_default();
                if value != &expected {
                    problems.push(format!(
                        "{name} shows {value:?}, but the value in effect is {expected:?}"
                    ));
                }
            }
            Some(many) => problems.push(format!("{name} appears {} times", many.len())),
        }
    }
    if !assigned.contains_key("RUST_LOG") {
        problems.push("RUST_LOG is missing".to_string());
    }
    assert!(
        problems.is_empty(),
        "{ENV_FILE}:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn packaging_deb_assets_exist() {
    let deb = deb_metadata();
    let assets = deb_assets(&deb);
    for (source, dest, mode) in &assets {
        if source.starts_with("target/release/") {
            // Built by cargo-deb itself; the path names a binary of this package.
            assert_eq!(
                source,
                &format!("target/release/{PACKAGE}"),
                "unexpected built asset"
            );
        } else {
            assert!(
                root().join(source).is_file(),
                "deb asset {source} -> {dest} does not exist"
            );
        }
        assert!(
            u32::from_str_radix(mode, 8).is_ok(),
            "deb asset {source}: mode {mode:?} is not octal"
        );
    }
    let env_asset = assets
        .iter()
        .find(|(source, ..)| source == ENV_FILE)
        .unwrap_or_else(|| panic!("{ENV_FILE} is not a deb asset"));
    assert_eq!(
        installed_path(&env_asset.0, &env_asset.1),
        ENV_FILE_INSTALLED
    );
    assert_eq!(
        env_asset.2, "600",
        "{ENV_FILE_INSTALLED} may hold secrets: root only"
    );

    // cargo-deb takes the unit from `<maintainer-scripts>/<package>.service` when systemd-units is
    // set, and requires every hand-written maintainer script there to carry #DEBHELPER#.
    assert!(deb["systemd-units"].is_object(), "systemd-units is not set");
    let scripts = deb["maintainer-scripts"]
        .as_str()
        .expect("maintainer-scripts is set (cargo-deb requires it for systemd-units)");
    let scripts = root().join(scripts);
    assert_eq!(
        scripts.join(format!("{PACKAGE}.service")),
        root().join(UNIT)
    );
    for script in ["preinst", "postinst", "prerm", "postrm"] {
        for name in [script.to_string(), format!("{PACKAGE}.{script}")] {
            if let Ok(text) = fs::read_to_string(scripts.join(&name)) {
                assert!(text.contains("#DEBHELPER#"), "{name} lacks #DEBHELPER#");
            }
        }
    }
}

/// Runs a command that must succeed, returning its stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}\n{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn packaging_deb_builds_and_installs() {
    if std::env::var("JOURNEYD_DEB_TEST").as_deref() != Ok("1") {
        println!(
            "packaging_deb_builds_and_installs: skipped; set JOURNEYD_DEB_TEST=1 to build and inspect the .deb"
        );
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    // Asked for explicitly, so a missing tool fails rather than passing unseen.
    let version = Command::new(&cargo).args(["deb", "--version"]).output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "JOURNEYD_DEB_TEST=1, but `cargo deb --version` does not work: `cargo install cargo-deb` first"
    );

    // A target directory of its own, so that this release build neither waits for nor disturbs the
    // build of the `cargo test` that runs it.
    let dir = temp_dir("deb");
    let deb = dir.join(format!("{PACKAGE}.deb"));
    run(Command::new(&cargo)
        .args(["deb", "--locked", "--output"])
        .arg(&deb)
        .arg("--manifest-path")
        .arg(root().join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", root().join("target/packaging-deb")));

    // Contents: `-rwxr-xr-x 0/0 123 2026-01-01 00:00 ./usr/bin/journeyd`.
    let listing = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let entries: BTreeMap<String, String> = listing
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let path = fields.get(5)?.trim_start_matches('.').to_string();
            // cargo-deb writes numeric owners; dpkg-deb shows names where a tar has them.
            let owner = fields[1].replace("root", "0");
            Some((path, format!("{} {owner}", fields[0])))
        })
        .collect();
    let unit_path = [
        "/lib/systemd/system/journeyd.service",
        "/usr/lib/systemd/system/journeyd.service",
    ]
    .into_iter()
    .find(|p| entries.contains_key(*p))
    .unwrap_or_else(|| panic!("the .deb holds no journeyd.service:\n{listing}"));
    for (path, expected) in [
        ("/usr/bin/journeyd", "-rwxr-xr-x 0/0"),
        (unit_path, "-rw-r--r-- 0/0"),
        (ENV_FILE_INSTALLED, "-rw------- 0/0"),
        ("/usr/share/doc/journeyd/README.md", "-rw-r--r-- 0/0"),
    ] {
        assert_eq!(
            entries.get(path).map(String::as_str),
            Some(expected),
            "{path} in the .deb:\n{listing}"
        );
    }

    // Control: the conffile, and maintainer scripts that manage the unit.
    let conffiles = run(Command::new("dpkg-deb")
        .arg("--info")
        .arg(&deb)
        .arg("conffiles"));
    assert_eq!(
        conffiles.lines().collect::<Vec<_>>(),
        [ENV_FILE_INSTALLED],
        "conffiles"
    );
    let control = run(Command::new("dpkg-deb")
        .arg("--info")
        .arg(&deb)
        .arg("control"));
    for field in [
        format!("Package: {PACKAGE}"),
        format!("Version: {}-1", env!("CARGO_PKG_VERSION")),
        "Section: net".to_string(),
        "Priority: optional".to_string(),
    ] {
        assert!(
            control.lines().any(|l| l == field),
            "control lacks {field:?}:\n{control}"
        );
    }
    for script in ["postinst", "prerm", "postrm"] {
        let text = run(Command::new("dpkg-deb").arg("--info").arg(&deb).arg(script));
        assert!(
            text.contains("journeyd.service"),
            "{script} does not manage journeyd.service:\n{text}"
        );
    }

    // Unpacked: the files are the ones in packaging/, and the binary runs.
    let unpacked = dir.join("root");
    run(Command::new("dpkg-deb")
        .arg("--extract")
        .arg(&deb)
        .arg(&unpacked));
    let in_root = |path: &str| unpacked.join(path.trim_start_matches('/'));
    assert_eq!(fs::read_to_string(in_root(unit_path)).unwrap(), read(UNIT));
    assert_eq!(
        fs::read_to_string(in_root(ENV_FILE_INSTALLED)).unwrap(),
        read(ENV_FILE)
    );
    let version = run(Command::new(in_root("/usr/bin/journeyd")).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("{PACKAGE} {}", env!("CARGO_PKG_VERSION"))
    );

    verify_unit(&unpacked, unit_path);
    let _ = fs::remove_dir_all(&dir);
}

/// `systemd-analyze verify` of the unpacked unit in a root that also holds the host's own units
/// (for the targets it names) and the unpacked binary (which it checks is executable). Skipped,
/// with a note, where there is no systemd-analyze.
fn verify_unit(unpacked: &Path, unit_path: &str) {
    let host_units = Path::new("/usr/lib/systemd/system");
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    if !analyze.is_ok_and(|o| o.status.success()) || !host_units.join("sysinit.target").exists() {
        println!(
            "packaging_deb_builds_and_installs: no systemd-analyze here; the unit was not verified"
        );
        return;
    }
    let units = unpacked.join("usr/lib/systemd/system");
    fs::create_dir_all(&units).unwrap();
    for entry in fs::read_dir(host_units).unwrap() {
        let path: PathBuf = entry.unwrap().path();
        let target = units.join(path.file_name().unwrap());
        if path.is_file() && !target.exists() {
            fs::copy(&path, &target).unwrap();
        }
    }
    // On a root without merged /usr, /lib/systemd/system is searched too, so the unit is found
    // wherever the package put it.
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", unpacked.display()))
        .arg("journeyd.service")
        .output()
        .expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // It exits 0 even for unknown or malformed settings, and only warns: any line about this unit
    // is a failure.
    assert!(
        out.status.success() && !stderr.contains("journeyd"),
        "systemd-analyze verify {unit_path}:\n{}",
        describe(&out)
    );
}
