//! The socket `mountd apply/get/describe/delete` talk to: `STATE_DIR/mountd.sock` (0600),
//! one JSON request and one JSON answer per connection.

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use super::engine::Engine;
use super::object::{Kind, Object, ObjectKey};
use super::store::Event;

/// The largest request: manifests of a few MiB.
const MAX_REQUEST: u64 = 64 << 20;

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("mountd.sock")
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ApiRequest {
    Apply {
        text: String,
        source: String,
    },
    /// `namespace: None` lists every namespace.
    Get {
        kind: Kind,
        namespace: Option<String>,
        name: Option<String>,
    },
    Describe {
        key: ObjectKey,
    },
    Delete {
        key: ObjectKey,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiAnswer {
    Lines(Vec<String>),
    Objects(Vec<serde_json::Value>),
    Described { object: serde_json::Value, events: Vec<Event> },
    Error(String),
}

pub async fn serve(engine: Arc<Engine>, listener: tokio::net::UnixListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let engine = engine.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST));
            let answer = match reader.read_line(&mut line).await {
                Ok(_) => match serde_json::from_str::<ApiRequest>(&line) {
                    Ok(request) => answer(&engine, request).await,
                    Err(e) => ApiAnswer::Error(format!("malformed request: {e}")),
                },
                Err(e) => ApiAnswer::Error(format!("reading the request: {e}")),
            };
            let mut bytes = serde_json::to_vec(&answer).unwrap_or_default();
            bytes.push(b'\n');
            let _ = write.write_all(&bytes).await;
        });
    }
}

async fn answer(engine: &Engine, request: ApiRequest) -> ApiAnswer {
    let result = match request {
        ApiRequest::Apply { text, source } => engine.apply(&text, &source).await.map(ApiAnswer::Lines),
        ApiRequest::Get { kind, namespace, name } => engine
            .get(kind, namespace.as_deref(), name.as_deref())
            .map(|objects| ApiAnswer::Objects(objects.iter().map(Object::to_json).collect())),
        ApiRequest::Describe { key } => {
            engine.describe(&key).map(|d| ApiAnswer::Described { object: d.object.to_json(), events: d.events })
        }
        ApiRequest::Delete { key } => engine.delete(&key).await.map(ApiAnswer::Lines),
    };
    result.unwrap_or_else(ApiAnswer::Error)
}

/// The CLI's side: one request to the daemon of `state_dir`.
pub fn call(state_dir: &Path, request: &ApiRequest) -> Result<ApiAnswer, String> {
    let path = socket_path(state_dir);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).map_err(|e| {
        format!(
            "cannot reach mountd at {}: {e} (is `mountd serve --state-dir {}` running?)",
            path.display(),
            state_dir.display()
        )
    })?;
    let mut bytes = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    bytes.push(b'\n');
    stream.write_all(&bytes).map_err(|e| format!("sending to mountd: {e}"))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).map_err(|e| format!("reading mountd's answer: {e}"))?;
    match serde_json::from_str(&line).map_err(|e| format!("mountd's answer is malformed: {e}"))? {
        ApiAnswer::Error(message) => Err(message),
        answer => Ok(answer),
    }
}
