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
use volfs_api::{ApiError, ErrorKind, SnapshotRef, VolumeSource};

use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::records::{pair_key, DockerRecord, PublicationRecord, State};
use crate::validate;

const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";
/// The options `docker volume create --opt` takes.
const OPTIONS: [&str; 4] = ["size", "from-snapshot", "from-volume", "subpath"];
/// Docker's own limit on a volume name.
const MAX_NAME: usize = 255;

pub fn router(driver: Arc<Driver>) -> Router {
    Router::new().route("/{call}", post(handle)).with_state(driver)
}

/// The protocol's calls: the names requests are counted under.
const CALLS: [&str; 9] = [
    "Plugin.Activate",
    "VolumeDriver.Capabilities",
    "VolumeDriver.List",
    "VolumeDriver.Create",
    "VolumeDriver.Remove",
    "VolumeDriver.Mount",
    "VolumeDriver.Unmount",
    "VolumeDriver.Path",
    "VolumeDriver.Get",
];

async fn handle(AxumState(driver): AxumState<Arc<Driver>>, Path(call): Path<String>, body: Bytes) -> Response {
    tracing::debug!(call, bytes = body.len(), "docker plugin request");
    let start = std::time::Instant::now();
    let Some(name) = CALLS.iter().find(|c| **c == call).copied() else {
        driver.metrics.docker("unknown", tonic::Code::Unimplemented, start.elapsed());
        return (StatusCode::NOT_FOUND, format!("{call} is not a volume plugin call")).into_response();
    };
    let answer = match name {
        "Plugin.Activate" => Ok(json!({ "Implements": ["VolumeDriver"] })),
        "VolumeDriver.Capabilities" => Ok(json!({ "Capabilities": { "Scope": "local" } })),
        "VolumeDriver.List" => list(&driver),
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
        "VolumeDriver.Path" => match parse::<NameRequest>(&body) {
            Ok(r) => path(&driver, &r.name),
            Err(e) => Err(e),
        },
        "VolumeDriver.Get" => match parse::<NameRequest>(&body) {
            Ok(r) => get(&driver, &r.name).await,
            Err(e) => Err(e),
        },
        _ => unreachable!("every name in CALLS is answered"),
    };
    let code = answer.as_ref().map_or_else(|e| e.code(), |_| tonic::Code::Ok);
    driver.metrics.docker(name, code, start.elapsed());
    if let Err(e) = &answer {
        // Refusals are routine (Docker retries, or shows the message); failures are not.
        if matches!(e.code(), tonic::Code::Internal | tonic::Code::Unavailable) {
            tracing::warn!(call, error = %e, "docker plugin request failed");
        } else {
            tracing::debug!(call, error = %e, "docker plugin request refused");
        }
    }
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], reply(answer).to_string()).into_response()
}

/// The protocol's answer: the result with an empty `Err`, or only `Err`.
fn reply(answer: Result<Value>) -> Value {
    match answer {
        Ok(mut v) => {
            v["Err"] = json!("");
            v
        }
        Err(e) => json!({ "Err": e.to_string() }),
    }
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
    /// Docker sends `null` when no `--opt` was given.
    #[serde(rename = "Opts", default)]
    opts: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct CallerRequest {
    #[serde(rename = "Name")]
    name: String,
    /// The container; Docker before 1.12 sent none.
    #[serde(rename = "ID", default)]
    id: String,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::InvalidArgument(format!("malformed request: {e}")))
}

/// A Docker volume name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 255 bytes, as Docker itself requires.
fn check_name(name: &str) -> Result<&str> {
    let ok = name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(name)
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid volume name {name:?}: use at most {MAX_NAME} letters, digits, '_', '.' and '-', \
             starting with a letter or digit"
        )))
    }
}

/// What `--opt` asked for.
#[derive(Debug, Default, PartialEq)]
struct Opts {
    size: Option<u64>,
    from: Option<SourceName>,
    subpath: Option<String>,
}

/// A source named by a Docker volume name (or a data-plane volume name), before it is resolved.
#[derive(Debug, PartialEq)]
enum SourceName {
    Volume(String),
    Snapshot { volume: String, snapshot: String },
}

fn parse_opts(opts: &BTreeMap<String, String>) -> Result<Opts> {
    let invalid = |key: &str, why: &dyn std::fmt::Display| Error::InvalidArgument(format!("option {key}: {why}"));
    for (key, value) in opts {
        if !OPTIONS.contains(&key.as_str()) {
            return Err(Error::InvalidArgument(format!("unknown option {key:?}; volfs takes {}", OPTIONS.join(", "))));
        }
        validate::text(&format!("option {key}"), value, validate::MAX_PATH)?;
    }
    let size =
        opts.get("size").map(|s| volfs_api::quantity::parse_size(s).map_err(|e| invalid("size", &e))).transpose()?;
    let from = match (opts.get("from-snapshot"), opts.get("from-volume")) {
        (Some(_), Some(_)) => {
            return Err(Error::InvalidArgument("options from-snapshot and from-volume exclude each other".into()))
        }
        (Some(s), None) => {
            let r = SnapshotRef::parse(s).map_err(|e| invalid("from-snapshot", &e))?;
            check_name(&r.volume).map_err(|e| invalid("from-snapshot", &e))?;
            Some(SourceName::Snapshot { volume: r.volume, snapshot: r.name })
        }
        (None, Some(v)) => Some(SourceName::Volume(check_name(v).map_err(|e| invalid("from-volume", &e))?.into())),
        (None, None) => None,
    };
    let subpath = opts.get("subpath").map(|s| validate::subpath("option subpath", s)).transpose()?;
    Ok(Opts { size, from, subpath })
}

/// A data-plane error, said of the Docker volume `name`.
fn of_volume(name: &str, e: ApiError) -> Error {
    Error::DataPlane(ApiError::new(e.kind, format!("volume {name}: {}", e.message)))
}

/// The data-plane volume behind a source name: a Docker volume's, else the name itself.
fn data_plane_volume(driver: &Driver, name: &str) -> Result<String> {
    Ok(driver.records.get::<DockerRecord>(name)?.map_or_else(|| name.to_string(), |r| r.volume_id))
}

/// The record of a volume that exists (or is being created); one being removed does not.
fn existing(driver: &Driver, name: &str) -> Result<DockerRecord> {
    match driver.records.get::<DockerRecord>(name)? {
        Some(r) if r.state != State::Deleting => Ok(r),
        _ => Err(Error::NotFound(format!("no such volume: {name}"))),
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

fn publication_key(driver: &Driver, record: &DockerRecord) -> String {
    pair_key(&record.volume_id, &mountpoint(driver, &record.name).to_string_lossy())
}

/// Create: records the volume (state Creating), asks the data plane, records it Ready. A name
/// that exists with the same options is created already; with others it is refused.
async fn create(driver: &Driver, request: CreateRequest) -> Result<Value> {
    let name = check_name(&request.name)?;
    let opts = request.opts.unwrap_or_default();
    parse_opts(&opts)?;
    let _guard = driver.inflight.begin(&format!("docker:{name}"), &format!("volume {name}"))?;
    if let Some(record) = driver.records.get::<DockerRecord>(name)? {
        if record.opts != opts {
            return Err(Error::AlreadyExists(format!("volume {name} exists with other options: {:?}", record.opts)));
        }
        if record.state != State::Ready {
            finish_create(driver, record).await?;
        }
        return Ok(json!({}));
    }
    let mut volume_id = validate::data_plane_name(name, "docker", |_| false);
    while driver.volume_name_taken(&volume_id).await? {
        volume_id = validate::data_plane_name(name, "docker", |n| n == volume_id);
    }
    let record =
        DockerRecord { name: name.to_string(), volume_id, opts, mounted_by: BTreeSet::new(), state: State::Creating };
    driver.records.put(&record)?;
    finish_create(driver, record).await?;
    Ok(json!({}))
}

/// Asks the data plane for the volume a record names (create is idempotent there); the record
/// becomes Ready. When the data plane refused, nothing was made and the record goes; when it
/// could not answer, the record stays for a retry or the next start.
async fn finish_create(driver: &Driver, mut record: DockerRecord) -> Result<DockerRecord> {
    let opts = parse_opts(&record.opts)?;
    let from = match opts.from {
        None => None,
        Some(SourceName::Volume(v)) => Some(VolumeSource::Volume(data_plane_volume(driver, &v)?)),
        Some(SourceName::Snapshot { volume, snapshot }) => {
            Some(VolumeSource::Snapshot(SnapshotRef { volume: data_plane_volume(driver, &volume)?, name: snapshot }))
        }
    };
    match driver.data.client().create_volume(&record.volume_id, opts.size, from).await {
        Ok(_) => {
            record.state = State::Ready;
            driver.records.put(&record)?;
            tracing::info!(name = %record.name, volume = %record.volume_id, "created docker volume");
            Ok(record)
        }
        Err(e) => {
            if !matches!(e.kind, ErrorKind::NotRunning | ErrorKind::Unavailable | ErrorKind::Internal) {
                driver.records.remove::<DockerRecord>(&record.name)?;
            }
            Err(of_volume(&record.name, e))
        }
    }
}

/// Remove: refused while a container has the volume mounted; else recorded (state Deleting),
/// deleted in the data plane, and forgotten. A remove that failed half-way is finished.
async fn remove(driver: &Driver, name: &str) -> Result<Value> {
    let name = check_name(name)?;
    let _guard = driver.inflight.begin(&format!("docker:{name}"), &format!("volume {name}"))?;
    let Some(mut record) = driver.records.get::<DockerRecord>(name)? else {
        return Err(Error::NotFound(format!("no such volume: {name}")));
    };
    if !record.mounted_by.is_empty() {
        let users: Vec<_> = record.mounted_by.iter().map(|id| &id[..id.len().min(12)]).collect();
        return Err(Error::FailedPrecondition(format!("volume {name} is in use by container(s) {}", users.join(", "))));
    }
    if record.state != State::Deleting {
        record.state = State::Deleting;
        driver.records.put(&record)?;
    }
    finish_remove(driver, &record).await?;
    Ok(json!({}))
}

async fn finish_remove(driver: &Driver, record: &DockerRecord) -> Result<()> {
    match driver.data.client().delete_volume(&record.volume_id).await {
        Ok(()) => {}
        Err(e) if e.kind == ErrorKind::NotFound => {}
        Err(e) => return Err(of_volume(&record.name, e)),
    }
    let _ = std::fs::remove_dir(mountpoint(driver, &record.name));
    driver.records.remove::<DockerRecord>(&record.name)?;
    tracing::info!(name = %record.name, volume = %record.volume_id, "removed docker volume");
    Ok(())
}

/// Mount: the first container mounts the volume at its mountpoint; every container is counted
/// by its id, once.
async fn mount(driver: &Driver, name: &str, caller: &str) -> Result<Value> {
    let name = check_name(name)?;
    let _guard = driver.inflight.begin(&format!("docker:{name}"), &format!("volume {name}"))?;
    let mut record = existing(driver, name)?;
    if record.state == State::Creating {
        record = finish_create(driver, record).await?;
    }
    let target = mountpoint(driver, name);
    let published = driver.records.get::<PublicationRecord>(&publication_key(driver, &record))?;
    if published.map(|p| p.state) != Some(State::Ready) {
        crate::serve::private_dir(&driver.state_dir.join("docker")).map_err(|e| Error::Internal(format!("{e:#}")))?;
        let publication = PublicationRecord {
            volume_id: record.volume_id.clone(),
            target: target.clone(),
            readonly: false,
            mode: 0,
            subpath: parse_opts(&record.opts)?.subpath,
            state: State::Creating,
        };
        driver.publish(&publication).await.map_err(|e| match e {
            Error::DataPlane(e) => of_volume(name, e),
            e => e,
        })?;
    }
    if record.mounted_by.insert(caller.to_string()) {
        driver.records.put(&record)?;
    }
    Ok(json!({ "Mountpoint": target }))
}

/// Unmount: the container is no longer counted; the last one out unmounts. An id that is not
/// counted is unmounted already.
async fn unmount(driver: &Driver, name: &str, caller: &str) -> Result<Value> {
    let name = check_name(name)?;
    let _guard = driver.inflight.begin(&format!("docker:{name}"), &format!("volume {name}"))?;
    let mut record = existing(driver, name)?;
    if record.mounted_by.remove(caller) {
        driver.records.put(&record)?;
    }
    if record.mounted_by.is_empty() {
        if let Some(publication) = driver.records.get::<PublicationRecord>(&publication_key(driver, &record))? {
            driver.unpublish(&publication).await?;
        }
    }
    Ok(json!({}))
}

fn path(driver: &Driver, name: &str) -> Result<Value> {
    let record = existing(driver, check_name(name)?)?;
    Ok(json!({ "Mountpoint": mountpoint_if_mounted(driver, &record) }))
}

async fn get(driver: &Driver, name: &str) -> Result<Value> {
    let record = existing(driver, check_name(name)?)?;
    let mut status = json!({ "volume": record.volume_id, "options": record.opts });
    match driver.data.client().inspect_volume(&record.volume_id).await {
        Ok(info) => {
            status["capacity"] = info.capacity.map_or(json!("unlimited"), |c| json!(c));
            status["used_bytes"] = json!(info.used_bytes);
        }
        Err(e) => tracing::debug!(name, error = %e, "no data-plane status for a docker volume"),
    }
    let mountpoint = mountpoint_if_mounted(driver, &record);
    Ok(json!({ "Volume": { "Name": record.name, "Mountpoint": mountpoint, "Status": status } }))
}

fn list(driver: &Driver) -> Result<Value> {
    let records = driver.records.all::<DockerRecord>()?;
    let volumes: Vec<_> = records
        .iter()
        .filter(|r| r.state == State::Ready)
        .map(|r| json!({ "Name": r.name, "Mountpoint": mountpoint_if_mounted(driver, r) }))
        .collect();
    Ok(json!({ "Volumes": volumes }))
}

/// Finishes the creates and removes a crash left recorded but not done. (The mounts are
/// publications, which `reconcile` makes again.)
pub async fn finish_in_flight(driver: &Driver) {
    let records = match driver.records.all::<DockerRecord>() {
        Ok(records) => records,
        Err(e) => return tracing::error!(error = %e, "cannot read the docker volume records"),
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
        let anonymous = "0123456789abcdef".repeat(4);
        for ok in ["v1", "My_Vol.2", "a-b", &anonymous, &"a".repeat(255)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "_a", "a/b", "a b", "../x", "a@b", "a\0b", &"a".repeat(256)] {
            let e = check_name(bad).unwrap_err();
            assert!(matches!(&e, Error::InvalidArgument(m) if m.contains("invalid volume name")), "{bad}: {e}");
        }
    }

    #[test]
    fn options_are_parsed() {
        let o = parse_opts(&opts(&[("size", "64Mi"), ("subpath", "a/b/"), ("from-snapshot", "db@nightly")])).unwrap();
        assert_eq!(o.size, Some(64 << 20));
        assert_eq!(o.subpath.as_deref(), Some("a/b"));
        assert_eq!(o.from, Some(SourceName::Snapshot { volume: "db".into(), snapshot: "nightly".into() }));
        let o = parse_opts(&opts(&[("from-volume", "Web_1"), ("size", "1.5Ki")])).unwrap();
        assert_eq!((o.size, o.from), (Some(1536), Some(SourceName::Volume("Web_1".into()))));
        assert_eq!(parse_opts(&opts(&[])).unwrap(), Opts::default());
    }

    #[test]
    fn bad_options_are_refused_naming_them() {
        for (bad, named) in [
            (opts(&[("nonsense", "1")]), "\"nonsense\"; volfs takes size, from-snapshot, from-volume, subpath"),
            (opts(&[("Size", "1Gi")]), "\"Size\""),
            (opts(&[("size", "lots")]), "option size: invalid size \"lots\""),
            (opts(&[("size", "")]), "option size is missing"),
            (opts(&[("from-snapshot", "nosnap")]), "option from-snapshot"),
            (opts(&[("from-snapshot", "a/b@s")]), "option from-snapshot: invalid volume name"),
            (opts(&[("from-volume", "../x")]), "option from-volume: invalid volume name"),
            (opts(&[("from-volume", "a"), ("from-snapshot", "a@b")]), "exclude each other"),
            (opts(&[("subpath", "../x")]), "option subpath"),
            (opts(&[("subpath", "/abs")]), "option subpath"),
        ] {
            let e = parse_opts(&bad).unwrap_err();
            assert!(matches!(&e, Error::InvalidArgument(m) if m.contains(named)), "{bad:?}: {e}");
        }
    }

    #[test]
    fn malformed_requests_are_refused() {
        for (body, why) in [
            (&b""[..], "EOF"),
            (b"{not json", "key must be a string"),
            (br#"{"Opts":{}}"#, "missing field `Name`"),
            (br#"{"Name":1}"#, "invalid type"),
        ] {
            let e = parse::<CreateRequest>(body).err().unwrap();
            assert!(e.to_string().starts_with("malformed request") && e.to_string().contains(why), "{e}");
        }
        let r = parse::<CreateRequest>(br#"{"Name":"v","Opts":null}"#).unwrap();
        assert_eq!((r.name.as_str(), r.opts), ("v", None));
        let r = parse::<CallerRequest>(br#"{"Name":"v"}"#).unwrap();
        assert_eq!(r.id, "");
    }

    #[test]
    fn answers_carry_err() {
        assert_eq!(reply(Ok(json!({ "Mountpoint": "/m" }))), json!({ "Mountpoint": "/m", "Err": "" }));
        assert_eq!(reply(Err(Error::NotFound("no such volume: v".into()))), json!({ "Err": "no such volume: v" }));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 4096, ..Default::default() })]

        /// Whatever Docker (or anything on the socket) sends, the plugin parses it or refuses it
        /// with an error; names and options that pass are what the checks promise.
        #[test]
        fn any_request_body_and_options_parse_or_are_refused(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            name in "[ -~]{0,40}",
            key in proptest::prelude::prop_oneof!["size", "subpath", "from-volume", "from-snapshot", "[a-z-]{0,12}"],
            value in "[ -~]{0,40}",
        ) {
            let _ = parse::<CreateRequest>(&body);
            let _ = parse::<CallerRequest>(&body);
            if let Ok(n) = check_name(&name) {
                proptest::prop_assert!(!n.contains('/') && !n.starts_with('.') && !n.is_empty());
            }
            if let Ok(o) = parse_opts(&opts(&[(&key, &value)])) {
                proptest::prop_assert!(OPTIONS.contains(&key.as_str()));
                if let Some(sub) = o.subpath {
                    proptest::prop_assert!(sub.split('/').all(|c| !c.is_empty() && c != ".." && c != "."));
                }
            }
        }
    }
}
