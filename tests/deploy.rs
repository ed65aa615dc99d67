//! The deployment files in mountd/deploy: every YAML document is a Kubernetes object (it parses
//! and has apiVersion and kind), and every `--flag` they pass to `volfs` or `mountd` (the
//! DaemonSet's containers of those names, the systemd units' ExecStart) is one that the binary's
//! subcommand lists in its `--help`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

const VOLFS: &str = env!("CARGO_BIN_EXE_volfs");

/// The binaries the deployment files run, and the containers that run them.
const BINARIES: [&str; 2] = ["volfs", "mountd"];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mountd/deploy")
}

/// The files of `mountd/deploy/DIR` whose names end in `.EXTENSION`, sorted.
fn files(dir: &str, extension: &str) -> Vec<PathBuf> {
    let dir = deploy_dir().join(dir);
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no *.{extension} in {}", dir.display());
    found
}

/// Every document of a multi-document YAML file.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .enumerate()
        .map(|(i, document)| {
            Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{} document {}: not YAML: {e}", path.display(), i + 1))
        })
        .collect()
}

/// A command line: what runs it, and its words (the program first).
struct CommandLine {
    origin: String,
    words: Vec<String>,
}

/// The command lines of a Kubernetes object's containers named after a volfs binary.
fn container_commands(object: &Value, origin: &str) -> Vec<CommandLine> {
    let pod = match object["kind"].as_str() {
        Some("Pod") => &object["spec"],
        _ => &object["spec"]["template"]["spec"],
    };
    let mut found = Vec::new();
    for container in pod["containers"].as_array().into_iter().flatten() {
        let name = container["name"].as_str().unwrap_or_default();
        if !BINARIES.contains(&name) {
            continue;
        }
        let words: Vec<String> = ["command", "args"]
            .iter()
            .flat_map(|key| container[*key].as_array().cloned().unwrap_or_default())
            .map(|w| {
                w.as_str().unwrap_or_else(|| panic!("{origin}: container {name}: a non-string word {w}")).to_string()
            })
            .collect();
        assert!(!words.is_empty(), "{origin}: container {name} has no command");
        found.push(CommandLine { origin: format!("{origin}, container {name}"), words });
    }
    found
}

/// The words of a unit's ExecStart line (continued lines joined, the prefixes `-@+!:` dropped).
fn exec_start(unit_text: &str, origin: &str) -> CommandLine {
    let joined = unit_text.replace("\\\n", " ");
    let lines: Vec<&str> = joined.lines().filter_map(|l| l.trim().strip_prefix("ExecStart=")).collect();
    assert_eq!(lines.len(), 1, "{origin}: expected one ExecStart line, found {lines:?}");
    let line = lines[0].trim_start_matches(['-', '@', '+', '!', ':']);
    CommandLine { origin: origin.to_string(), words: line.split_whitespace().map(str::to_string).collect() }
}

/// The long flags a clap `--help` lists: the `--name` words of its option lines.
fn help_flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .flat_map(|l| l.split_whitespace().take_while(|w| w.starts_with('-') || w.starts_with('<')))
        .filter(|w| w.starts_with("--"))
        .map(|w| w.trim_end_matches(',').split('=').next().unwrap_or_default().to_string())
        .collect()
}

/// The flags of a command line that `known` does not hold.
fn unknown_flags(words: &[String], known: &BTreeSet<String>) -> Vec<String> {
    words
        .iter()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.split('=').next().unwrap_or_default().to_string())
        .filter(|f| !known.contains(f))
        .collect()
}

/// The path of a volfs binary, built beside the test's `volfs`.
fn binary(name: &str) -> PathBuf {
    let path = match name {
        "volfs" => PathBuf::from(VOLFS),
        other => Path::new(VOLFS).with_file_name(other),
    };
    assert!(path.is_file(), "{} is missing: run `cargo build --release --workspace` first", path.display());
    path
}

/// `BINARY SUBCOMMAND --help`, run once per pair.
fn help<'a>(cache: &'a mut BTreeMap<(String, String), String>, program: &str, subcommand: &str) -> &'a str {
    cache.entry((program.to_string(), subcommand.to_string())).or_insert_with(|| {
        let path = binary(program);
        let out = Command::new(&path).args([subcommand, "--help"]).output().expect("running --help");
        assert!(
            out.status.success(),
            "`{} {subcommand} --help` failed ({}): {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("--help printed UTF-8")
    })
}

/// Checks one command line against its binary's `--help`; returns which binary it runs.
fn check(cache: &mut BTreeMap<(String, String), String>, line: &CommandLine) -> String {
    let origin = &line.origin;
    let program = Path::new(&line.words[0]).file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    assert!(BINARIES.contains(&program.as_str()), "{origin}: runs {:?}, which is not volfs or mountd", line.words[0]);
    let subcommand = line.words.get(1).filter(|w| !w.starts_with('-'));
    let subcommand = subcommand.unwrap_or_else(|| panic!("{origin}: `{program}` without a subcommand"));
    let known = help_flags(help(cache, &program, subcommand));
    assert!(!known.is_empty(), "{origin}: `{program} {subcommand} --help` lists no flags");
    let unknown = unknown_flags(&line.words, &known);
    assert!(
        unknown.is_empty(),
        "{origin}: `{program} {subcommand}` has no flag {unknown:?}; it has {known:?}\n  command: {}",
        line.words.join(" ")
    );
    program
}

#[test]
fn every_manifest_is_a_kubernetes_object() {
    for file in files("kubernetes", "yaml") {
        let documents = documents(&file);
        assert!(!documents.is_empty(), "{}: no YAML document", file.display());
        for (i, object) in documents.iter().enumerate() {
            for field in ["apiVersion", "kind"] {
                let value = object[field].as_str().unwrap_or_default();
                assert!(!value.is_empty(), "{} document {}: no {field}", file.display(), i + 1);
            }
            assert!(
                object["metadata"]["name"].as_str().is_some_and(|n| !n.is_empty()),
                "{} document {}: no metadata.name",
                file.display(),
                i + 1
            );
        }
    }
}

#[test]
fn every_flag_passed_to_volfs_or_mountd_exists() {
    let mut lines = Vec::new();
    for file in files("kubernetes", "yaml") {
        for (i, object) in documents(&file).iter().enumerate() {
            lines.extend(container_commands(object, &format!("{} document {}", file.display(), i + 1)));
        }
    }
    for unit in files("systemd", "service") {
        let text = std::fs::read_to_string(&unit).unwrap_or_else(|e| panic!("reading {}: {e}", unit.display()));
        lines.push(exec_start(&text, &unit.display().to_string()));
    }
    let mut cache = BTreeMap::new();
    let mut checked: BTreeMap<String, usize> = BTreeMap::new();
    for line in &lines {
        *checked.entry(check(&mut cache, line)).or_default() += 1;
    }
    // The DaemonSet and the units each run both binaries: a renamed container or unit must not
    // make this test check nothing.
    for program in BINARIES {
        assert!(checked.get(program).copied().unwrap_or(0) >= 2, "{program} is run fewer than twice: {checked:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The parsing above, on fixed text.

const CLAP_HELP: &str = "\
Serve the pool

Usage: volfs serve [OPTIONS]

Options:
      --pool <POOL>      The pool directory [env: VOLFS_POOL=]
      --socket <SOCKET>  The control socket (default: --pool's own)
  -j, --json             Print JSON
  -h, --help             Print help
";

fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

#[test]
fn help_flags_are_the_option_lines_long_names() {
    let flags: Vec<String> = help_flags(CLAP_HELP).into_iter().collect();
    assert_eq!(flags, ["--help", "--json", "--pool", "--socket"]);
}

#[test]
fn unknown_flags_are_named_with_or_without_a_value() {
    let known = help_flags(CLAP_HELP);
    assert!(unknown_flags(&words("volfs serve --pool /p --socket=/s --json"), &known).is_empty());
    assert_eq!(unknown_flags(&words("volfs serve --pool /p --pools=/q --nope"), &known), ["--pools", "--nope"]);
}

#[test]
fn exec_start_is_read_with_continuations_and_prefixes() {
    let unit = "[Service]\nType=simple\nExecStart=-/usr/local/bin/mountd serve \\\n  --pool /p\nRestart=always\n";
    assert_eq!(exec_start(unit, "unit").words, words("/usr/local/bin/mountd serve --pool /p"));
}

#[test]
fn containers_of_a_daemonset_give_command_and_args() {
    let yaml = "
kind: DaemonSet
spec:
  template:
    spec:
      containers:
        - name: volfs
          command: [volfs, serve]
          args: [--pool, /p]
        - name: csi-provisioner
          args: [--csi-address=/csi/csi.sock]
";
    let object: Value = serde_norway::from_str(yaml).unwrap();
    let lines = container_commands(&object, "test");
    assert_eq!(lines.len(), 1, "only the volfs container");
    assert_eq!(lines[0].words, words("volfs serve --pool /p"));
}
