//! The Docker volume plugin (protocol v1): JSON over HTTP POSTs on a unix socket that dockerd
//! finds in /run/docker/plugins. A Docker volume is a data-plane volume, mounted under the state
//! dir while containers use it (counted by the caller ids Docker sends) and bound into them
//! by Docker. Errors travel in `Err`, as the protocol wants.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State as AxumState};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use volfs_api::{ErrorKind, SnapshotRef, VolumeSource};

use crate::driver::Driver;
use crate::records::{pair_key, DockerRecord, PublicationRecord, State};
use crate::validate;

const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";
/// The options `docker volume create --opt` takes.
const OPTIONS: [&str; 4] = ["size", "from-snapshot", "from-volume", "subpath"];

type Answer = Result<Value, String>;

pub fn router(driver: Arc<Driver>) -> Router {
    Router::new().route("/{call}", post(handle)).with_state(driver)
}

async fn handle(AxumState(driver): AxumState<Arc<Driver>>, Path(call): Path<String>, body: Bytes) -> Response {
    tracing::debug!(call, "docker plugin request");
    let answer = match call.as_str() {
        "Plugin.Activate" => Ok(json!({ "Implements": ["VolumeDriver"] })),
        "VolumeDriver.Capabilities" => Ok(json!({ "Capabilities": { "Scope": "local" } })),
        "VolumeDriver.Create" => match parse::<CreateRequest>(&body) {
            Ok(r) => create(&driver, r).await,
            Err(e) => Err(e),
        },
        "VolumeDriver.Remove" => match parse::<NameRequest>(&body) {
            Ok(r) => remove(&driver, &r.name).await,
            Err(e) => Err(e),
        },
        "VolumeDriver.Mount" => match parse::<CallerRequest>(&body) {
            Ok(r) => mount(&driver, &r.name, &r.id).await,
            Err(e) => Err(e),
        },
        "VolumeDriver.Unmount" => match parse::<CallerRequest>(&body) {
            Ok(r) => unmount(&driver, &r.name, &r.id).await,
            Err(e) => Err(e),
        },
        "VolumeDriver.Path" => parse::<NameRequest>(&body).and_then(|r| {
            let record = existing(&driver, &r.name)?;
            Ok(json!({ "Mountpoint": mountpoint_if_mounted(&driver, &record) }))
        }),
        "VolumeDriver.Get" => match parse::<NameRequest>(&body) {
            Ok(r) => get(&driver, &r.name).await,
            Err(e) => Err(e),
        },
        "VolumeDriver.List" => list(&driver),
        _ => return (StatusCode::NOT_FOUND, format!("{call} is not a volume plugin call")).into_response(),
    };
    let body = match answer {
        Ok(mut v) => {
            v["Err"] = json!("");
            v
        }
        Err(e) => {
            tracing::info!(call, error = %e, "docker plugin request refused");
            json!({ "Err": e })
        }
    };
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body.to_string()).into_response()
}

#[derive(Deserialize)]
struct NameRequest {
    #[serde(rename = "Name")]
    name: String,
}

#[derive(Deserialize)]
struct CreateRequest {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Opts", default)]
    opts: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct CallerRequest {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "ID", default)]
    id: String,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("malformed request: {e}"))
}

/// A Docker volume name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, as Docker itself requires.
fn check_name(name: &str) -> Result<&str, String> {
    let ok = name.len() <= 255
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(name)
    } else {
        Err(format!(
            "invalid volume name {name:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit"
        ))
    }
}

/// What `--opt` asked for.
#[derive(Debug, Default, PartialEq)]
struct Opts {
    size: Option<u64>,
    from: Option<VolumeSourceName>,
    subpath: Option<String>,
}

/// A source named by Docker volume name (or data-plane volume name), before it is resolved.
#[derive(Debug, PartialEq)]
enum VolumeSourceName {
    Volume(String),
    Snapshot { volume: String, snapshot: String },
}

fn parse_opts(opts: &BTreeMap<String, String>) -> Result<Opts, String> {
    if let Some(unknown) = opts.keys().find(|k| !OPTIONS.contains(&k.as_str())) {
        return Err(format!("unknown option {unknown:?}; volfs takes {}", OPTIONS.join(", ")));
    }
    let size = opts
        .get("size")
        .map(|s| volfs_api::quantity::parse_size(s).map_err(|e| format!("option size: {e}")))
        .transpose()?;
    let from = match (opts.get("from-snapshot"), opts.get("from-volume")) {
        (Some(_), Some(_)) => return Err("options from-snapshot and from-volume exclude each other".into()),
        (Some(s), None) => {
            let r = SnapshotRef::parse(s).map_err(|e| format!("option from-snapshot: {e}"))?;
            check_name(&r.volume).map_err(|e| format!("option from-snapshot: {e}"))?;
            Some(VolumeSourceName::Snapshot { volume: r.volume, snapshot: r.name })
        }
        (None, Some(v)) => {
            Some(VolumeSourceName::Volume(check_name(v).map_err(|e| format!("option from-volume: {e}"))?.into()))
        }
        (None, None) => None,
    };
    let subpath =
        opts.get("subpath").map(|s| validate::subpath("option subpath", s).map_err(|e| e.to_string())).transpose()?;
    Ok(Opts { size, from, subpath })
}

/// The data-plane volume behind a name: a Docker volume's, else the name itself.
fn data_plane_volume(driver: &Driver, name: &str) -> Result<String, String> {
    match driver.records.get::<DockerRecord>(name).map_err(|e| e.to_string())? {
        Some(record) => Ok(record.volume_id),
        None => Ok(name.to_string()),
    }
}

fn existing(driver: &Driver, name: &str) -> Result<DockerRecord, String> {
    match driver.records.get::<DockerRecord>(name).map_err(|e| e.to_string())? {
        Some(r) if r.state != State::Deleting => Ok(r),
        _ => Err(format!("no such volume: {name}")),
    }
}

fn mountpoint(driver: &Driver, name: &str) -> PathBuf {
    driver.state_dir.join("docker").join(name)
}

fn mountpoint_if_mounted(driver: &Driver, record: &DockerRecord) -> String {
    if record.mounted_by.is_empty() {
        String::new()
    } else {
        mountpoint(driver, &record.name).to_string_lossy().into_owned()
    }
}

async fn create(driver: &Driver, request: CreateRequest) -> Answer {
    let name = check_name(&request.name)?;
    let opts_text = request.opts.unwrap_or_default();
    parse_opts(&opts_text)?;
    let _guard =
        driver.inflight.begin(&format!("docker:{name}"), &format!("volume {name}")).map_err(|e| e.to_string())?;
    if let Some(record) = driver.records.get::<DockerRecord>(name).map_err(|e| e.to_string())? {
        if record.opts != opts_text {
            return Err(format!("volume {name} exists with other options ({:?})", record.opts));
        }
        if record.state == State::Ready {
            return Ok(json!({}));
        }
        return finish_create(driver, record).await.map(|_| json!({}));
    }
    let mut volume_id = validate::data_plane_name(name, "docker", |_| false);
    while driver.volume_name_taken(&volume_id).await.map_err(|e| e.to_string())? {
        volume_id = validate::data_plane_name(name, "docker", |n| n == volume_id);
    }
    let record = DockerRecord {
        name: name.to_string(),
        volume_id,
        opts: opts_text,
        mounted_by: BTreeSet::new(),
        state: State::Creating,
    };
    driver.records.put(&record).map_err(|e| e.to_string())?;
    finish_create(driver, record).await.map(|_| json!({}))
}

/// Asks the data plane for the volume a recorded create names; the record becomes Ready, or
/// goes when the data plane refused (nothing was made).
async fn finish_create(driver: &Driver, mut record: DockerRecord) -> Result<DockerRecord, String> {
    let opts = parse_opts(&record.opts)?;
    let from = match opts.from {
        None => None,
        Some(VolumeSourceName::Volume(v)) => Some(VolumeSource::Volume(data_plane_volume(driver, &v)?)),
        Some(VolumeSourceName::Snapshot { volume, snapshot }) => {
            Some(VolumeSource::Snapshot(SnapshotRef { volume: data_plane_volume(driver, &volume)?, name: snapshot }))
        }
    };
    match driver.data.client().create_volume(&record.volume_id, opts.size, from).await {
        Ok(_) => {
            record.state = State::Ready;
            driver.records.put(&record).map_err(|e| e.to_string())?;
            tracing::info!(name = %record.name, volume = %record.volume_id, "created docker volume");
            Ok(record)
        }
        Err(e) => {
            if !matches!(e.kind, ErrorKind::NotRunning | ErrorKind::Unavailable | ErrorKind::Internal) {
                driver.records.remove::<DockerRecord>(&record.name).map_err(|e| e.to_string())?;
            }
            Err(format!("volume {}: {}", record.name, e.message))
        }
    }
}

async fn remove(driver: &Driver, name: &str) -> Answer {
    let _guard =
        driver.inflight.begin(&format!("docker:{name}"), &format!("volume {name}")).map_err(|e| e.to_string())?;
    let mut record = existing(driver, name)?;
    if !record.mounted_by.is_empty() {
        let users: Vec<_> = record.mounted_by.iter().map(|id| &id[..id.len().min(12)]).collect();
        return Err(format!("volume {name} is in use by container(s) {}", users.join(", ")));
    }
    record.state = State::Deleting;
    driver.records.put(&record).map_err(|e| e.to_string())?;
    finish_remove(driver, &record).await?;
    Ok(json!({}))
}

async fn finish_remove(driver: &Driver, record: &DockerRecord) -> Result<(), String> {
    match driver.data.client().delete_volume(&record.volume_id).await {
        Ok(()) => {}
        Err(e) if e.kind == ErrorKind::NotFound => {}
        Err(e) => return Err(format!("volume {}: {}", record.name, e.message)),
    }
    let _ = std::fs::remove_dir(mountpoint(driver, &record.name));
    driver.records.remove::<DockerRecord>(&record.name).map_err(|e| e.to_string())?;
    tracing::info!(name = %record.name, volume = %record.volume_id, "removed docker volume");
    Ok(())
}

async fn mount(driver: &Driver, name: &str, caller: &str) -> Answer {
    let _guard =
        driver.inflight.begin(&format!("docker:{name}"), &format!("volume {name}")).map_err(|e| e.to_string())?;
    let mut record = existing(driver, name)?;
    if record.state == State::Creating {
        record = finish_create(driver, record).await?;
    }
    let target = mountpoint(driver, name);
    let key = pair_key(&record.volume_id, &target.to_string_lossy());
    if driver.records.get::<PublicationRecord>(&key).map_err(|e| e.to_string())?.is_none() {
        crate::serve::private_dir(&driver.state_dir.join("docker")).map_err(|e| e.to_string())?;
        let subpath = parse_opts(&record.opts)?.subpath;
        let publication = PublicationRecord {
            volume_id: record.volume_id.clone(),
            target: target.clone(),
            readonly: false,
            mode: 0,
            subpath,
            state: State::Creating,
        };
        driver.publish(&publication).await.map_err(|e| e.to_string())?;
    }
    if record.mounted_by.insert(caller.to_string()) {
        driver.records.put(&record).map_err(|e| e.to_string())?;
    }
    Ok(json!({ "Mountpoint": target }))
}

async fn unmount(driver: &Driver, name: &str, caller: &str) -> Answer {
    let _guard =
        driver.inflight.begin(&format!("docker:{name}"), &format!("volume {name}")).map_err(|e| e.to_string())?;
    let mut record = existing(driver, name)?;
    if record.mounted_by.remove(caller) {
        driver.records.put(&record).map_err(|e| e.to_string())?;
    }
    if record.mounted_by.is_empty() {
        let key = pair_key(&record.volume_id, &mountpoint(driver, name).to_string_lossy());
        if let Some(publication) = driver.records.get::<PublicationRecord>(&key).map_err(|e| e.to_string())? {
            driver.unpublish(&publication).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(json!({}))
}

async fn get(driver: &Driver, name: &str) -> Answer {
    let record = existing(driver, name)?;
    let mut status = json!({ "volume": record.volume_id, "options": record.opts });
    if let Ok(info) = driver.data.client().inspect_volume(&record.volume_id).await {
        status["capacity"] = info.capacity.map_or(json!("unlimited"), |c| json!(c));
        status["used_bytes"] = json!(info.used_bytes);
    }
    let mountpoint = mountpoint_if_mounted(driver, &record);
    Ok(json!({ "Volume": { "Name": record.name, "Mountpoint": mountpoint, "Status": status } }))
}

fn list(driver: &Driver) -> Answer {
    let records = driver.records.all::<DockerRecord>().map_err(|e| e.to_string())?;
    let volumes: Vec<_> = records
        .iter()
        .filter(|r| r.state == State::Ready)
        .map(|r| json!({ "Name": r.name, "Mountpoint": mountpoint_if_mounted(driver, r) }))
        .collect();
    Ok(json!({ "Volumes": volumes }))
}

/// Finishes the creates and removes a crash left recorded but not done.
pub async fn finish_in_flight(driver: &Driver) {
    let Ok(records) = driver.records.all::<DockerRecord>() else {
        return tracing::error!("cannot read the docker volume records");
    };
    for record in records {
        let done = match record.state {
            State::Creating => finish_create(driver, record.clone()).await.map(drop),
            State::Deleting => finish_remove(driver, &record).await,
            State::Ready => Ok(()),
        };
        if let Err(e) = done {
            tracing::warn!(name = %record.name, error = %e, "could not finish a docker volume operation");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn docker_names_are_checked() {
        for ok in ["v1", "My_Vol.2", &"a".repeat(64)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a/b", "a b", "../x"] {
            assert!(check_name(bad).unwrap_err().contains("invalid volume name"), "{bad}");
        }
    }

    #[test]
    fn options_are_parsed_and_unknown_ones_named() {
        let o = parse_opts(&opts(&[("size", "64Mi"), ("subpath", "a/b"), ("from-snapshot", "db@nightly")])).unwrap();
        assert_eq!(o.size, Some(64 << 20));
        assert_eq!(o.subpath.as_deref(), Some("a/b"));
        assert_eq!(o.from, Some(VolumeSourceName::Snapshot { volume: "db".into(), snapshot: "nightly".into() }));
        assert_eq!(parse_opts(&opts(&[])).unwrap(), Opts::default());
        for (bad, named) in [
            (opts(&[("nonsense", "1")]), "nonsense"),
            (opts(&[("size", "lots")]), "size"),
            (opts(&[("from-snapshot", "nosnap")]), "from-snapshot"),
            (opts(&[("from-volume", "a"), ("from-snapshot", "a@b")]), "exclude"),
            (opts(&[("subpath", "../x")]), "subpath"),
        ] {
            let e = parse_opts(&bad).unwrap_err();
            assert!(e.contains(named), "{e}");
        }
    }
}
