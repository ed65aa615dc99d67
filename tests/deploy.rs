//! The deployment files in mountd/deploy: every YAML document parses as a Kubernetes object,
//! and every flag they pass to `volfs` or `mountd` exists in that binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

const VOLFS: &str = env!("CARGO_BIN_EXE_volfs");

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mountd/deploy")
}

fn files(dir: &str, extension: &str) -> Vec<PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(deploy_dir().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no *.{extension} in mountd/deploy/{dir}");
    found
}

/// `BIN SUBCOMMAND --help`.
fn help(binary: &str, subcommand: &str) -> String {
    let path = match binary {
        "volfs" => PathBuf::from(VOLFS),
        "mountd" => Path::new(VOLFS).with_file_name("mountd"),
        other => panic!("deploy files run {other}, which is not a volfs binary"),
    };
    assert!(path.is_file(), "{} is missing: run `cargo build --release --workspace` first", path.display());
    let out = Command::new(&path).args([subcommand, "--help"]).output().unwrap();
    assert!(out.status.success(), "{binary} {subcommand} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// Checks that each `--flag` of a command line (`volfs serve …` or `mountd serve …`) exists.
fn check_command(words: &[String], origin: &str) -> usize {
    let binary = Path::new(&words[0]).file_name().unwrap().to_str().unwrap().to_string();
    let subcommand = &words[1];
    let help = help(&binary, subcommand);
    let mut flags = 0;
    for word in words.iter().filter(|w| w.starts_with("--")) {
        let flag = word.split('=').next().unwrap();
        assert!(help.contains(&format!("{flag} ")), "{origin}: `{binary} {subcommand}` has no flag {flag}");
        flags += 1;
    }
    flags
}

#[test]
fn every_manifest_is_a_kubernetes_object_and_every_flag_exists() {
    let mut flags = 0;
    for file in files("kubernetes", "yaml") {
        let text = std::fs::read_to_string(&file).unwrap();
        for document in serde_norway::Deserializer::from_str(&text) {
            let object = serde_json::Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", file.display()));
            for field in ["apiVersion", "kind"] {
                assert!(object[field].is_string(), "{}: a document without {field}", file.display());
            }
            let containers = object["spec"]["template"]["spec"]["containers"].as_array().cloned().unwrap_or_default();
            for c in containers.iter().filter(|c| matches!(c["name"].as_str(), Some("volfs" | "mountd"))) {
                let words: Vec<String> = ["command", "args"]
                    .iter()
                    .flat_map(|k| c[*k].as_array().cloned().unwrap_or_default())
                    .map(|w| w.as_str().unwrap().to_string())
                    .collect();
                flags += check_command(&words, &format!("{} container {}", file.display(), c["name"]));
            }
        }
    }
    for unit in files("systemd", "service") {
        let text = std::fs::read_to_string(&unit).unwrap();
        let exec = text.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("a unit has ExecStart");
        let words: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
        flags += check_command(&words, &unit.display().to_string());
    }
    assert!(flags >= 10, "only {flags} flags found: the manifests were not read");
}
