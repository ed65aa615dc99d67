//! The SPEC format: a multi-document YAML file that reads like Kubernetes manifests. The
//! first document is a `projected` volume source (`sources`, `defaultMode`); later documents
//! are the objects it reads, each with a `kind`: `ConfigMap`, `Secret`, `Pod` (metadata,
//! fsGroup, runAsUser and container resources for downwardAPI), `Node` (allocatable, for
//! resource limits a container does not set) and `ServiceAccountToken` (token text).
//!
//! Every struct denies unknown fields. Modes accept YAML 1.1 octal (`0644`) as Kubernetes reads
//! manifests, and decimal (`420`). Values of Secret documents and tokens never appear in an
//! error or in `Debug` output.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use serde::de::{DeserializeOwned, Error as _, IgnoredAny};
use serde::{Deserialize, Deserializer};
use serde_norway::Value;

use volfs_api::quantity::Quantity;

/// A SPEC that cannot be projected: which document, which field, and why.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct SpecError {
    document: String,
    field: String,
    message: String,
}

impl SpecError {
    pub(crate) fn new(document: impl Into<String>, field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError { document: document.into(), field: field.into(), message: message.into() }
    }

    /// The document, as `document N (kind name)`.
    pub fn document(&self) -> &str {
        &self.document
    }

    /// The field path inside the document, e.g. `sources[2].configMap.items[0].path`; empty
    /// when the error is about the whole document.
    pub fn field(&self) -> &str {
        &self.field
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    fn render(&self) -> String {
        let mut out = self.document.clone();
        for part in [&self.field, &self.message] {
            if !part.is_empty() {
                if !out.is_empty() {
                    out.push_str(": ");
                }
                out.push_str(part);
            }
        }
        out
    }
}

impl fmt::Debug for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpecError({})", self.render())
    }
}

/// A parsed document and how errors name it.
pub(crate) struct Doc<T> {
    pub label: String,
    pub value: T,
}

impl<T> Doc<T> {
    pub fn error(&self, field: impl Into<String>, message: impl Into<String>) -> SpecError {
        SpecError::new(self.label.clone(), field, message)
    }
}

/// Every document of a SPEC, sorted by kind.
pub(crate) struct Documents {
    pub projected: Doc<ProjectedSource>,
    pub config_maps: Vec<Doc<ConfigMapDoc>>,
    pub secrets: Vec<Doc<SecretDoc>>,
    pub pod: Option<Doc<PodDoc>>,
    pub node: Option<Doc<NodeDoc>>,
    pub tokens: Vec<Doc<TokenDoc>>,
}

const KINDS: &str = "ConfigMap, Secret, Pod, Node or ServiceAccountToken";

impl Documents {
    pub fn parse(text: &str) -> Result<Documents, SpecError> {
        let mut projected = None;
        let mut config_maps: Vec<Doc<ConfigMapDoc>> = Vec::new();
        let mut secrets: Vec<Doc<SecretDoc>> = Vec::new();
        let mut pod: Option<Doc<PodDoc>> = None;
        let mut node: Option<Doc<NodeDoc>> = None;
        let mut tokens: Vec<Doc<TokenDoc>> = Vec::new();

        for (i, de) in serde_norway::Deserializer::from_str(text).enumerate() {
            let number = i + 1;
            let bare = format!("document {number}");
            let value = Value::deserialize(de).map_err(|e| SpecError::new(&bare, "", format!("invalid YAML: {e}")))?;
            if value.is_null() {
                continue;
            }
            let Value::Mapping(map) = &value else {
                return Err(SpecError::new(bare, "", "must be a mapping (field: value lines)"));
            };
            let kind = match map.get("kind") {
                None => None,
                Some(Value::String(k)) => Some(k.clone()),
                Some(_) => return Err(SpecError::new(bare, "kind", "must be a string")),
            };
            let name = map.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str);
            let label = match (&kind, name) {
                (None, _) => format!("{bare} (projected)"),
                (Some(k), Some(n)) => format!("{bare} ({k} {n})"),
                (Some(k), None) => format!("{bare} ({k})"),
            };
            let first = projected.is_none();
            match kind.as_deref() {
                None if first => projected = Some(typed(value, label, false)?),
                None => {
                    return Err(SpecError::new(
                        bare,
                        "kind",
                        format!(
                            "missing; only the first document is the projected volume source, later ones are a {KINDS}"
                        ),
                    ))
                }
                Some(k) if first => {
                    return Err(SpecError::new(
                        label,
                        "kind",
                        format!(
                            "the first document must be the projected volume source (sources, defaultMode) \
                             and has no kind; got kind {k:?}"
                        ),
                    ))
                }
                Some("ConfigMap") => {
                    let doc: Doc<ConfigMapDoc> = typed(value, label, false)?;
                    if let Some(other) = config_maps.iter().find(|o| o.value.metadata.same_object(&doc.value.metadata))
                    {
                        return Err(doc.error("metadata.name", format!("duplicate ConfigMap (also {})", other.label)));
                    }
                    config_maps.push(doc);
                }
                Some("Secret") => {
                    let doc: Doc<SecretDoc> = typed(value, label, true)?;
                    if let Some(other) = secrets.iter().find(|o| o.value.metadata.same_object(&doc.value.metadata)) {
                        return Err(doc.error("metadata.name", format!("duplicate Secret (also {})", other.label)));
                    }
                    secrets.push(doc);
                }
                Some("Pod") => {
                    let doc: Doc<PodDoc> = typed(value, label, false)?;
                    if let Some(other) = &pod {
                        return Err(doc.error("kind", format!("only one Pod document (also {})", other.label)));
                    }
                    pod = Some(doc);
                }
                Some("Node") => {
                    let doc: Doc<NodeDoc> = typed(value, label, false)?;
                    if let Some(other) = &node {
                        return Err(doc.error("kind", format!("only one Node document (also {})", other.label)));
                    }
                    node = Some(doc);
                }
                Some("ServiceAccountToken") => {
                    let doc: Doc<TokenDoc> = typed(value, label, true)?;
                    if let Some(other) = tokens.iter().find(|o| o.value.audience == doc.value.audience) {
                        let audience = doc.value.audience.as_deref().unwrap_or("");
                        return Err(doc.error(
                            "audience",
                            format!("duplicate token for audience {audience:?} (also {})", other.label),
                        ));
                    }
                    tokens.push(doc);
                }
                Some(k) => return Err(SpecError::new(label, "kind", format!("unknown kind {k:?}; expected {KINDS}"))),
            }
        }
        let projected = projected.ok_or_else(|| {
            SpecError::new("document 1", "", "no projected volume source (a document with `sources:`)")
        })?;
        Ok(Documents { projected, config_maps, secrets, pod, node, tokens })
    }
}

/// Deserializes one document, naming the field that failed. For documents holding secrets,
/// serde's messages are cut so they cannot quote a value.
fn typed<T: DeserializeOwned>(value: Value, label: String, secret: bool) -> Result<Doc<T>, SpecError> {
    match serde_path_to_error::deserialize(value) {
        Ok(value) => Ok(Doc { label, value }),
        Err(e) => {
            let field = e.path().to_string();
            let field = if field == "." { String::new() } else { field };
            let message = e.into_inner().to_string();
            let message = if secret { redact_serde_message(&message) } else { message };
            let message = match unknown_source_type(&field, &message) {
                Some(kind) => format!(
                    "unknown source type `{kind}`; volfs projects configMap, secret, downwardAPI and serviceAccountToken"
                ),
                None => message,
            };
            Err(SpecError::new(label, field, message))
        }
    }
}

/// The unknown field of a `sources[N]` entry: a volume source type volfs does not know.
fn unknown_source_type<'a>(field: &'a str, message: &str) -> Option<&'a str> {
    let rest = field.strip_prefix("sources[")?;
    let (index, kind) = rest.split_once("].")?;
    let plain = index.bytes().all(|b| b.is_ascii_digit()) && !kind.contains(['.', '[']);
    (plain && message.starts_with("unknown field")).then_some(kind)
}

/// serde's "invalid type: string \"…\", expected …" quotes the value; keep what was expected.
fn redact_serde_message(message: &str) -> String {
    if message.starts_with("invalid type") || message.starts_with("invalid value") {
        match message.split_once(", expected ") {
            Some((_, expected)) => format!("invalid type or value (not shown), expected {expected}"),
            None => "invalid type or value (not shown)".into(),
        }
    } else {
        message.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Document 1: the projected volume source, as in a pod's `volumes[].projected`.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ProjectedSource {
    #[serde(default)]
    pub sources: Vec<Source>,
    pub default_mode: Option<Mode>,
}

/// One entry of `sources`: exactly one of the fields is set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Source {
    pub config_map: Option<ObjectSource>,
    pub secret: Option<ObjectSource>,
    #[serde(rename = "downwardAPI")]
    pub downward_api: Option<DownwardSource>,
    pub service_account_token: Option<TokenSource>,
    /// Known to Kubernetes, not offered here: refused with a clear error.
    pub cluster_trust_bundle: Option<IgnoredAny>,
    pub pod_certificate: Option<IgnoredAny>,
}

/// A `configMap` or `secret` source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ObjectSource {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub items: Vec<KeyToPath>,
    pub optional: Option<Bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct KeyToPath {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub path: String,
    pub mode: Option<Mode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct DownwardSource {
    #[serde(default)]
    pub items: Vec<DownwardItem>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct DownwardItem {
    #[serde(default)]
    pub path: String,
    pub field_ref: Option<FieldRef>,
    pub resource_field_ref: Option<ResourceFieldRef>,
    pub mode: Option<Mode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct FieldRef {
    pub api_version: Option<String>,
    #[serde(default)]
    pub field_path: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ResourceFieldRef {
    #[serde(default)]
    pub container_name: String,
    #[serde(default)]
    pub resource: String,
    pub divisor: Option<Quantity>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct TokenSource {
    pub audience: Option<String>,
    pub expiration_seconds: Option<i64>,
    #[serde(default)]
    pub path: String,
}

// ---------------------------------------------------------------------------------------------
// Objects.

/// `metadata` as Kubernetes writes it; fields the projection does not use are accepted, so
/// `kubectl get -o yaml` output can be pasted.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // fields accepted as Kubernetes writes them, not used here
pub(crate) struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    pub namespace: Option<String>,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    generate_name: Option<IgnoredAny>,
    resource_version: Option<IgnoredAny>,
    creation_timestamp: Option<IgnoredAny>,
    deletion_timestamp: Option<IgnoredAny>,
    deletion_grace_period_seconds: Option<IgnoredAny>,
    generation: Option<IgnoredAny>,
    managed_fields: Option<IgnoredAny>,
    owner_references: Option<IgnoredAny>,
    finalizers: Option<IgnoredAny>,
    self_link: Option<IgnoredAny>,
}

impl ObjectMeta {
    fn same_object(&self, other: &ObjectMeta) -> bool {
        self.name == other.name && self.namespace == other.namespace
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // fields accepted as Kubernetes writes them, not used here
pub(crate) struct ConfigMapDoc {
    pub api_version: Option<String>,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    #[serde(default)]
    pub binary_data: BTreeMap<String, Base64>,
    pub immutable: Option<Bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // fields accepted as Kubernetes writes them, not used here
pub(crate) struct SecretDoc {
    pub api_version: Option<String>,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    #[serde(default)]
    pub data: BTreeMap<String, SecretBase64>,
    #[serde(default)]
    pub string_data: BTreeMap<String, SecretText>,
    pub immutable: Option<Bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // fields accepted as Kubernetes writes them, not used here
pub(crate) struct PodDoc {
    pub api_version: Option<String>,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PodSpec {
    #[serde(default)]
    pub security_context: PodSecurityContext,
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default)]
    pub init_containers: Vec<Container>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // fields accepted as Kubernetes writes them, not used here
pub(crate) struct PodSecurityContext {
    pub fs_group: Option<i64>,
    pub run_as_user: Option<i64>,
    run_as_group: Option<IgnoredAny>,
    run_as_non_root: Option<IgnoredAny>,
    supplemental_groups: Option<IgnoredAny>,
    /// Projected volumes always get the whole ownership pass, whatever the policy says.
    fs_group_change_policy: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // fields accepted as Kubernetes writes them, not used here
pub(crate) struct Container {
    #[serde(default)]
    pub name: String,
    image: Option<IgnoredAny>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub security_context: ContainerSecurityContext,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // fields accepted as Kubernetes writes them, not used here
pub(crate) struct ContainerSecurityContext {
    pub run_as_user: Option<i64>,
    run_as_group: Option<IgnoredAny>,
    run_as_non_root: Option<IgnoredAny>,
    read_only_root_filesystem: Option<IgnoredAny>,
    allow_privilege_escalation: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Resources {
    #[serde(default)]
    pub limits: BTreeMap<String, Quantity>,
    #[serde(default)]
    pub requests: BTreeMap<String, Quantity>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // fields accepted as Kubernetes writes them, not used here
pub(crate) struct NodeDoc {
    pub api_version: Option<String>,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    spec: Option<IgnoredAny>,
    #[serde(default)]
    pub status: NodeStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // fields accepted as Kubernetes writes them, not used here
pub(crate) struct NodeStatus {
    #[serde(default)]
    pub allocatable: BTreeMap<String, Quantity>,
    capacity: Option<IgnoredAny>,
    conditions: Option<IgnoredAny>,
    addresses: Option<IgnoredAny>,
    daemon_endpoints: Option<IgnoredAny>,
    node_info: Option<IgnoredAny>,
    images: Option<IgnoredAny>,
    volumes_attached: Option<IgnoredAny>,
    volumes_in_use: Option<IgnoredAny>,
    config: Option<IgnoredAny>,
    runtime_handlers: Option<IgnoredAny>,
    features: Option<IgnoredAny>,
}

/// The text of a token a serviceAccountToken source projects: the one whose `audience` matches
/// the source's, else the one without an audience.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // fields accepted as Kubernetes writes them, not used here
pub(crate) struct TokenDoc {
    pub api_version: Option<String>,
    pub kind: String,
    pub audience: Option<String>,
    pub token: SecretText,
}

// ---------------------------------------------------------------------------------------------
// Scalars.

/// A file mode as Kubernetes reads it from a manifest: YAML 1.1 makes `0644` octal, and a
/// decimal `420` is the same mode. Range-checked: 0 to 0777.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mode(pub u32);

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const HINT: &str = "must be an integer file mode such as 0644 (octal) or 420 (decimal)";
        let n = match Value::deserialize(d)? {
            Value::Number(n) => n.as_i64().ok_or_else(|| D::Error::custom(format!("{HINT}, got {n}")))?,
            Value::String(s) => yaml11_int(&s).ok_or_else(|| D::Error::custom(format!("{HINT}, got {s:?}")))?,
            _ => return Err(D::Error::custom(HINT)),
        };
        if !(0..=0o777).contains(&n) {
            let got = if n < 0 { n.to_string() } else { format!("0{n:o} (decimal {n})") };
            return Err(D::Error::custom(format!(
                "must be a number between 0 and 0777 (octal), both inclusive; got {got}"
            )));
        }
        Ok(Mode(n as u32))
    }
}

/// An integer in YAML 1.1 notation: `0644` octal, `0x1a4` hex, `0b…` binary, `420` decimal,
/// with optional sign and `_` separators. serde_norway reads YAML 1.2, where `0644` is text.
fn yaml11_int(text: &str) -> Option<i64> {
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let body = body.replace('_', "");
    let (digits, radix) = if let Some(hex) = body.strip_prefix("0x") {
        (hex, 16)
    } else if let Some(bin) = body.strip_prefix("0b") {
        (bin, 2)
    } else if let Some(oct) = body.strip_prefix("0o") {
        (oct, 8)
    } else if body.len() > 1 && body.starts_with('0') {
        (&body[1..], 8)
    } else {
        (body.as_str(), 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let n = i64::from_str_radix(digits, radix).ok()?;
    Some(if negative { -n } else { n })
}

/// A boolean; YAML 1.1's `yes`/`no`/`on`/`off` too, as Kubernetes reads manifests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bool(pub bool);

impl<'de> Deserialize<'de> for Bool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(b) => Ok(Bool(b)),
            Value::String(s) => match s.as_str() {
                "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Ok(Bool(true)),
                "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Ok(Bool(false)),
                _ => Err(D::Error::custom(format!("must be true or false, got {s:?}"))),
            },
            _ => Err(D::Error::custom("must be true or false")),
        }
    }
}

/// Go's `base64.StdEncoding`, which Kubernetes uses for `[]byte` fields: padded, and line
/// breaks are ignored.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    let compact: String = text.chars().filter(|c| *c != '\n' && *c != '\r').collect();
    engine.decode(compact).ok()
}

/// `binaryData` of a ConfigMap: base64 text.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Base64(pub Vec<u8>);

impl<'de> Deserialize<'de> for Base64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => decode_base64(&s).map(Base64).ok_or_else(|| D::Error::custom("not valid base64")),
            _ => Err(D::Error::custom("must be base64 text")),
        }
    }
}

impl fmt::Debug for Base64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

/// A Secret's `data` value: base64 text. Errors never quote it; `Debug` shows its size only.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SecretBase64(pub Vec<u8>);

impl<'de> Deserialize<'de> for SecretBase64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => decode_base64(&s)
                .map(SecretBase64)
                .ok_or_else(|| D::Error::custom("not valid base64 (value not shown)")),
            _ => Err(D::Error::custom("must be base64 text (value not shown)")),
        }
    }
}

impl Drop for SecretBase64 {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for SecretBase64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes, secret redacted>", self.0.len())
    }
}

/// A Secret's `stringData` value or a token: text. Errors never quote it; `Debug` shows its
/// size only.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SecretText(pub String);

impl Drop for SecretText {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(SecretText(s)),
            _ => Err(D::Error::custom("must be a string (value not shown)")),
        }
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes, secret redacted>", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml11_integers() {
        assert_eq!(yaml11_int("0644"), Some(0o644));
        assert_eq!(yaml11_int("0400"), Some(0o400));
        assert_eq!(yaml11_int("420"), Some(420));
        assert_eq!(yaml11_int("0"), Some(0));
        assert_eq!(yaml11_int("0o755"), Some(0o755));
        assert_eq!(yaml11_int("0x1ff"), Some(0o777));
        assert_eq!(yaml11_int("-1"), Some(-1));
        assert_eq!(yaml11_int("0_644"), Some(0o644));
        assert_eq!(yaml11_int("0888"), None);
        assert_eq!(yaml11_int("rw-r--r--"), None);
        assert_eq!(yaml11_int(""), None);
    }

    #[test]
    fn serde_messages_of_secret_documents_quote_no_value() {
        let m = redact_serde_message("invalid type: string \"hunter2\", expected a map");
        assert!(!m.contains("hunter2"), "{m}");
        assert!(m.contains("expected a map"), "{m}");
        assert_eq!(redact_serde_message("unknown field `dta`"), "unknown field `dta`");
    }

    #[test]
    fn base64_is_go_std_encoding() {
        assert_eq!(decode_base64("aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(decode_base64("aGVs\nbG8="), Some(b"hello".to_vec()));
        assert_eq!(decode_base64("aGVsbG8"), None);
        assert_eq!(decode_base64("@@@@"), None);
    }
}
