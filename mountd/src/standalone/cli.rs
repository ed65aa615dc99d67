//! `mountd apply|get|describe|delete`: kubectl's verbs against the daemon of a state dir.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::api::{call, ApiAnswer, ApiRequest};
use super::engine::now_unix;
use super::object::{Kind, Object, ObjectKey};
use super::print;

/// How long `delete` waits for an object that has no reason to linger.
const DELETE_WAIT: Duration = Duration::from_secs(60);

/// `-f FILE|DIR|-`: every manifest, with the name to report errors under. A directory gives
/// its `.yaml`, `.yml` and `.json` files in name order.
pub fn read_manifests(paths: &[PathBuf]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map_err(|e| format!("reading stdin: {e}"))?;
            out.push(("-".to_string(), text));
            continue;
        }
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("the path {:?} does not exist: {e}", path.display().to_string()))?;
        let files = if meta.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml" || x == "json"))
                .collect();
            files.sort();
            files
        } else {
            vec![path.clone()]
        };
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|e| format!("reading {}: {e}", file.display()))?;
            out.push((file.display().to_string(), text));
        }
    }
    Ok(out)
}

pub fn apply(state: &Path, paths: &[PathBuf]) -> Result<String, String> {
    let mut out = String::new();
    for (source, text) in read_manifests(paths)? {
        match call(state, &ApiRequest::Apply { text, source })? {
            ApiAnswer::Lines(lines) => lines.iter().for_each(|l| out.push_str(&format!("{l}\n"))),
            other => return Err(format!("unexpected answer {other:?}")),
        }
    }
    Ok(out)
}

fn objects(answer: ApiAnswer) -> Result<Vec<Object>, String> {
    match answer {
        ApiAnswer::Objects(values) => values.into_iter().map(Object::from_json).collect(),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// `get KIND [NAME] [-o wide|json|yaml|name]`.
pub fn get(
    state: &Path,
    kind: &str,
    name: Option<&str>,
    namespace: &str,
    all_namespaces: bool,
    output: Option<&str>,
) -> Result<String, String> {
    let kind = Kind::from_cli(kind)?;
    let ns = (!all_namespaces).then(|| namespace.to_string());
    let found = objects(call(state, &ApiRequest::Get { kind, namespace: ns, name: name.map(String::from) })?)?;
    let namespaces = all_namespaces && kind.namespaced();
    match output {
        None => Ok(print::get_table(kind, &found, false, namespaces, namespace, now_unix())),
        Some("wide") => Ok(print::get_table(kind, &found, true, namespaces, namespace, now_unix())),
        Some("json") => print::structured(&found, name.is_some(), false),
        Some("yaml") => print::structured(&found, name.is_some(), true),
        Some("name") => Ok(print::names(&found)),
        Some(other) => Err(format!("unable to match a printer suitable for the output format {other:?}, allowed formats are: json,name,wide,yaml")),
    }
}

fn key(kind: &str, name: &str, namespace: &str) -> Result<ObjectKey, String> {
    Ok(ObjectKey::new(Kind::from_cli(kind)?, namespace, name))
}

pub fn describe(state: &Path, kind: &str, name: &str, namespace: &str) -> Result<String, String> {
    match call(state, &ApiRequest::Describe { key: key(kind, name, namespace)? })? {
        ApiAnswer::Described { object, events } => {
            Ok(print::describe(&Object::from_json(object)?, &events, now_unix()))
        }
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// `delete KIND NAME`: waits until the object is gone, unless the daemon says what keeps it.
pub fn delete(state: &Path, kind: &str, name: &str, namespace: &str, wait: bool) -> Result<String, String> {
    let key = key(kind, name, namespace)?;
    let lines = match call(state, &ApiRequest::Delete { key: key.clone() })? {
        ApiAnswer::Lines(lines) => lines,
        other => return Err(format!("unexpected answer {other:?}")),
    };
    let mut out = String::new();
    let (deleted, notes) = lines.split_first().ok_or("empty answer")?;
    out.push_str(deleted);
    out.push('\n');
    for note in notes {
        out.push_str(&format!("warning: {note}\n"));
    }
    if wait && notes.is_empty() {
        let start = Instant::now();
        let request =
            || ApiRequest::Get { kind: key.kind, namespace: Some(key.namespace.clone()), name: Some(key.name.clone()) };
        while call(state, &request()).is_ok() {
            if start.elapsed() > DELETE_WAIT {
                out.push_str(&format!(
                    "warning: {} {:?} is still Terminating; see `mountd describe {} {}`\n",
                    key.kind.resource(),
                    key.name,
                    kind,
                    name
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(out)
}
