//! The kubelet's rules, one test each, through `Projection::from_yaml`; and generations of
//! the live tree without a kernel.

use super::live::{Kind, Tree, DATA_LINK, ROOT_INO};
use super::*;

fn project(text: &str) -> Projection {
    Projection::from_yaml(text).unwrap_or_else(|e| panic!("{e}"))
}

fn error(text: &str) -> String {
    match Projection::from_yaml(text) {
        Ok(p) => panic!("projected without error: {p:?}"),
        Err(e) => e.to_string(),
    }
}

fn file<'a>(p: &'a Projection, path: &str) -> &'a File {
    match p.get(path) {
        Some(Node::File(f)) => f,
        other => panic!("{path}: {other:?}"),
    }
}

fn dir<'a>(p: &'a Projection, path: &str) -> &'a Dir {
    match p.get(path) {
        Some(Node::Dir(d)) => d,
        other => panic!("{path}: {other:?}"),
    }
}

fn text(p: &Projection, path: &str) -> String {
    String::from_utf8(file(p, path).content.bytes().to_vec()).unwrap()
}

fn paths(p: &Projection) -> Vec<String> {
    p.files().into_iter().map(|(path, _)| path).collect()
}

const APP: &str = "
---
kind: ConfigMap
metadata: {name: app}
data:
  app.yaml: |
    port: 8080
  log.level: debug
binaryData:
  blob.bin: AAEC/w==
";

fn with_app(first: &str) -> String {
    format!("{first}{APP}")
}

// ---------------------------------------------------------------------------------------------
// Keys, items, modes.

#[test]
fn every_key_of_data_and_binary_data_is_a_file_with_default_mode_0644() {
    let p = project(&with_app("sources:\n- configMap: {name: app}\n"));
    assert_eq!(paths(&p), ["app.yaml", "blob.bin", "log.level"]);
    assert_eq!(text(&p, "app.yaml"), "port: 8080\n");
    assert_eq!(file(&p, "blob.bin").content.bytes(), [0, 1, 2, 255]);
    for (_, f) in p.files() {
        assert_eq!((f.mode, f.uid, f.gid), (0o644, 0, 0));
    }
    let layout = p.layout();
    assert_eq!((layout.root_mode, layout.dir_mode, layout.gid, layout.fs_group), (0o1777, 0o755, 0, None));
}

#[test]
fn modes_are_octal_as_in_yaml_1_1_or_decimal() {
    for (written, mode) in [("0400", 0o400), ("256", 0o400), ("0o400", 0o400), ("0", 0), ("0777", 0o777)] {
        let p = project(&with_app(&format!("sources:\n- configMap: {{name: app}}\ndefaultMode: {written}\n")));
        assert_eq!(file(&p, "app.yaml").mode, mode, "defaultMode {written}");
    }
    let p = project(&with_app(
        "sources:\n- configMap:\n    name: app\n    items:\n    - {key: app.yaml, path: a, mode: 0755}\n    - {key: log.level, path: b, mode: 493}\n    - {key: blob.bin, path: c}\ndefaultMode: 0600\n",
    ));
    assert_eq!((file(&p, "a").mode, file(&p, "b").mode, file(&p, "c").mode), (0o755, 0o755, 0o600));
}

#[test]
fn modes_above_0777_or_below_0_name_the_field() {
    let e = error(&with_app("sources:\n- configMap: {name: app}\ndefaultMode: 01000\n"));
    assert_eq!(
        e,
        "document 1 (projected): defaultMode: must be a number between 0 and 0777 (octal), both inclusive; \
         got 01000 (decimal 512)"
    );
    let e = error(&with_app("sources:\n- configMap: {name: app, items: [{key: a, path: a, mode: 512}]}\n"));
    assert!(
        e.starts_with("document 1 (projected): sources[0].configMap.items[0].mode: must be a number between"),
        "{e}"
    );
    let e = error(&with_app("sources:\n- configMap: {name: app, items: [{key: a, path: a, mode: -1}]}\n"));
    assert!(e.contains("items[0].mode: must be a number between 0 and 0777"), "{e}");
    let e = error(&with_app("sources:\n- configMap: {name: app}\ndefaultMode: 0888\n"));
    assert!(e.contains("defaultMode: must be an integer file mode such as 0644 (octal) or 420 (decimal)"), "{e}");
}

#[test]
fn items_project_only_the_listed_keys_at_their_paths() {
    let p = project(&with_app(
        "sources:\n- configMap:\n    name: app\n    items:\n    - {key: app.yaml, path: conf/app/main.yaml}\n    - {key: blob.bin, path: ./bin//blob/}\n",
    ));
    assert_eq!(paths(&p), ["bin/blob", "conf/app/main.yaml"]);
    assert_eq!(text(&p, "conf/app/main.yaml"), "port: 8080\n");
    let d = dir(&p, "conf/app");
    assert_eq!((d.mode, d.uid, d.gid), (0o755, 0, 0));
}

#[test]
fn a_missing_key_fails_unless_the_source_is_optional() {
    let spec = "sources:\n- configMap:\n    name: app\n    items:\n    - {key: app.yaml, path: a}\n    - {key: nope, path: b}\n";
    let e = error(&with_app(spec));
    assert_eq!(
        e,
        "document 1 (projected): sources[0].configMap.items[1].key: configmap references non-existent config key: nope"
    );
    let p = project(&with_app(&spec.replace("name: app\n", "name: app\n    optional: true\n")));
    assert_eq!(paths(&p), ["a"]);
    // YAML 1.1 booleans, as Kubernetes reads them.
    let p = project(&with_app(&spec.replace("name: app\n", "name: app\n    optional: yes\n")));
    assert_eq!(paths(&p), ["a"]);
}

#[test]
fn a_missing_object_fails_unless_optional_then_it_is_empty() {
    let e = error("sources:\n- configMap: {name: gone}\n- secret: {name: app}\n");
    assert!(e.starts_with("document 1 (projected): sources[0].configMap.name: configmap \"gone\" not found"), "{e}");
    let e = error("sources:\n- secret: {name: gone}\n");
    assert!(e.starts_with("document 1 (projected): sources[0].secret.name: secret \"gone\" not found"), "{e}");
    let p = project("sources:\n- configMap: {name: gone, optional: true, items: [{key: k, path: k}]}\n- secret: {name: gone, optional: true}\n");
    assert!(p.root().entries.is_empty());
}

#[test]
fn objects_are_found_in_the_pods_namespace() {
    let spec = "sources:\n- configMap: {name: app}\n---\nkind: Pod\nmetadata: {name: web, namespace: prod}\n---\nkind: ConfigMap\nmetadata: {name: app, namespace: dev}\ndata: {k: dev}\n";
    let e = error(spec);
    assert!(e.contains("configmap \"app\" not found"), "{e}");
    let p =
        project(&format!("{spec}---\nkind: ConfigMap\nmetadata: {{name: app, namespace: prod}}\ndata: {{k: prod}}\n"));
    assert_eq!(text(&p, "k"), "prod");
}

// ---------------------------------------------------------------------------------------------
// Secrets.

const DB: &str = "
---
apiVersion: v1
kind: Secret
metadata: {name: db}
type: Opaque
data:
  password: aHVudGVyMg==
  user: YWRtaW4=
stringData:
  user: root
";

#[test]
fn secret_data_is_base64_decoded_and_string_data_wins() {
    let p = project(&format!("sources:\n- secret: {{name: db}}\n{DB}"));
    assert_eq!(text(&p, "password"), "hunter2");
    assert_eq!(text(&p, "user"), "root");
    assert!(file(&p, "password").content.is_secret());
    let e = error(&format!("sources:\n- secret: {{name: db, items: [{{key: token, path: t}}]}}\n{DB}"));
    assert!(e.ends_with("sources[0].secret.items[0].key: secret references non-existent secret key: token"), "{e}");
}

#[test]
fn bad_base64_names_the_key_but_not_the_value() {
    let e =
        error("sources:\n- secret: {name: s}\n---\nkind: Secret\nmetadata: {name: s}\ndata:\n  pw: 's3cr3t-value!'\n");
    assert_eq!(e, "document 2 (Secret s): data.pw: not valid base64 (value not shown)");
    let e = error("sources:\n- secret: {name: s}\n---\nkind: Secret\nmetadata: {name: s}\ndata: 's3cr3t-value!'\n");
    assert!(e.starts_with("document 2 (Secret s): data: invalid type or value (not shown)"), "{e}");
    assert!(!e.contains("s3cr3t"), "{e}");
}

#[test]
fn debug_output_redacts_contents() {
    let p = project(&format!("sources:\n- secret: {{name: db}}\n- configMap: {{name: app}}\n{DB}{APP}"));
    let shown = format!("{p:?}");
    assert!(!shown.contains("hunter2") && !shown.contains("port: 8080"), "{shown}");
    assert!(shown.contains("<7 bytes, secret redacted>"), "{shown}");
    let docs = spec::Documents::parse(&format!("sources: []\n{DB}")).unwrap();
    let shown = format!("{:?}", docs.secrets[0].value);
    assert!(!shown.contains("hunter2") && !shown.contains("root\""), "{shown}");
    let token = "sources: []\n---\nkind: ServiceAccountToken\ntoken: eyJhbGciOiJSUzI1NiJ9.secret\n";
    let shown = format!("{:?}", spec::Documents::parse(token).unwrap().tokens[0].value);
    assert!(!shown.contains("eyJ"), "{shown}");
}

// ---------------------------------------------------------------------------------------------
// Merge and conflicts.

#[test]
fn later_sources_win_a_path() {
    let spec = format!(
        "sources:\n- configMap: {{name: app}}\n- secret: {{name: db, items: [{{key: user, path: app.yaml}}]}}\n{APP}{DB}"
    );
    let p = project(&spec);
    assert_eq!(text(&p, "app.yaml"), "root");
    assert!(file(&p, "app.yaml").content.is_secret());
    // The same path written differently is the same file.
    let p = project(&format!(
        "sources:\n- secret: {{name: db, items: [{{key: user, path: x/./y}}]}}\n- configMap: {{name: app, items: [{{key: log.level, path: x//y}}]}}\n{APP}{DB}"
    ));
    assert_eq!(text(&p, "x/y"), "debug");
}

#[test]
fn identical_explicit_item_paths_conflict() {
    let e = error(&format!(
        "sources:\n- configMap: {{name: app, items: [{{key: app.yaml, path: conf}}]}}\n- secret: {{name: db, items: [{{key: user, path: conf}}]}}\n{APP}{DB}"
    ));
    assert_eq!(
        e,
        "document 1 (projected): sources[1].secret.items[0].path: conflicting duplicate paths: \"conf\" is also \
         sources[0].configMap.items[0].path"
    );
}

#[test]
fn a_path_that_is_a_file_and_a_directory_fails() {
    let e = error(&format!(
        "sources:\n- configMap: {{name: app}}\n- secret: {{name: db, items: [{{key: user, path: app.yaml/user}}]}}\n{APP}{DB}"
    ));
    assert_eq!(
        e,
        "document 1 (projected): sources[1].secret.items[0].path: \"app.yaml/user\" needs \"app.yaml\" to be a \
         directory, but sources[0].configMap (key \"app.yaml\") makes it a file"
    );
}

// ---------------------------------------------------------------------------------------------
// Path rules.

#[test]
fn bad_paths_name_document_and_field() {
    let long = "x".repeat(256);
    let cases = [
        ("../x", "must not contain '..'"),
        ("a/../b", "must not contain '..'"),
        ("..", "must not contain '..'"),
        ("..data", "must not start with '..'"),
        ("..foo/x", "must not start with '..'"),
        ("/etc/passwd", "must be a relative path"),
        ("''", "required"),
        (".", "must name a file below the volume's root"),
        (long.as_str(), "file names must be at most 255 bytes"),
    ];
    for (path, why) in cases {
        let e = error(&with_app(&format!(
            "sources:\n- configMap: {{name: app}}\n- configMap:\n    name: app\n    items: [{{key: app.yaml, path: {path}}}]\n"
        )));
        assert!(
            e.starts_with(&format!("document 1 (projected): sources[1].configMap.items[0].path: {why}")),
            "{path}: {e}"
        );
    }
    let p = project(&with_app("sources:\n- configMap: {name: app, items: [{key: app.yaml, path: a/..b}]}\n"));
    assert_eq!(paths(&p), ["a/..b"]);
    let e = error("sources:\n- downwardAPI: {items: [{path: ../name, fieldRef: {fieldPath: metadata.name}}]}\n");
    assert!(
        e.starts_with("document 1 (projected): sources[0].downwardAPI.items[0].path: must not contain '..'"),
        "{e}"
    );
    let e = error("sources:\n- serviceAccountToken: {path: /token}\n");
    assert!(
        e.starts_with("document 1 (projected): sources[0].serviceAccountToken.path: must be a relative path"),
        "{e}"
    );
}

#[test]
fn object_keys_follow_the_api_rules() {
    let e = error("sources: []\n---\nkind: ConfigMap\nmetadata: {name: c}\ndata: {'..x': v}\n");
    assert_eq!(e, "document 2 (ConfigMap c): data[..x]: must not start with '..' (got \"..x\")");
    let e = error("sources: []\n---\nkind: ConfigMap\nmetadata: {name: c}\ndata: {'a/b': v}\n");
    assert!(e.starts_with("document 2 (ConfigMap c): data[a/b]: invalid key \"a/b\""), "{e}");
    let e = error("sources: []\n---\nkind: ConfigMap\nmetadata: {name: c}\ndata: {k: v}\nbinaryData: {k: AA==}\n");
    assert_eq!(e, "document 2 (ConfigMap c): binaryData[k]: duplicate of key present in data");
}

// ---------------------------------------------------------------------------------------------
// Bad documents.

#[test]
fn unknown_fields_and_source_types_name_the_field() {
    let e = error("sources:\n- configMap: {nmae: app}\n");
    assert!(e.starts_with("document 1 (projected): sources[0].configMap.nmae: unknown field `nmae`"), "{e}");
    let e = error("sources:\n- gitRepo: {repository: x}\n");
    assert_eq!(
        e,
        "document 1 (projected): sources[0].gitRepo: unknown source type `gitRepo`; volfs projects configMap, \
         secret, downwardAPI and serviceAccountToken"
    );
    let e = error("sources:\n- clusterTrustBundle: {name: x, path: ca.pem}\n");
    assert_eq!(e, "document 1 (projected): sources[0].clusterTrustBundle: source type not supported by volfs");
    let e = error("sources:\n- {}\n");
    assert!(e.starts_with("document 1 (projected): sources[0]: must specify one volume type"), "{e}");
    let e = error(&with_app("sources:\n- configMap: {name: app}\n  secret: {name: app}\n"));
    assert_eq!(e, "document 1 (projected): sources[0]: may not specify more than 1 volume type");
    let e = error("sources: []\nitems: []\n");
    assert!(e.starts_with("document 1 (projected): items: unknown field `items`"), "{e}");
    let e = error("sources: []\n---\nkind: ConfigMap\nmetadata: {name: c}\ndata: {k: v}\ndatta: {}\n");
    assert!(e.starts_with("document 2 (ConfigMap c): datta: unknown field `datta`"), "{e}");
    let e = error("sources: []\n---\nkind: Pod\nmetadata: {name: p}\nspec:\n  securityContext: {fsGrop: 1}\n");
    assert!(e.starts_with("document 2 (Pod p): spec.securityContext.fsGrop: unknown field `fsGrop`"), "{e}");
}

#[test]
fn bad_documents_are_named() {
    let e = error("sources: [\n");
    assert!(e.starts_with("document 1: invalid YAML: "), "{e}");
    let e = error("sources: []\n---\nkind: ConfigMap\nmetadata: {name: c\n");
    assert!(e.starts_with("document 2: invalid YAML: "), "{e}");
    let e = error("sources: []\n---\nkind: Deployment\nmetadata: {name: d}\n");
    assert!(e.starts_with("document 2 (Deployment d): kind: unknown kind \"Deployment\""), "{e}");
    let e = error("kind: ConfigMap\nmetadata: {name: c}\n");
    assert!(
        e.starts_with("document 1 (ConfigMap c): kind: the first document must be the projected volume source"),
        "{e}"
    );
    let e = error("sources: []\n---\nmetadata: {name: c}\n");
    assert!(e.starts_with("document 2: kind: missing"), "{e}");
    let e = error("- a\n- b\n");
    assert_eq!(e, "document 1: must be a mapping (field: value lines)");
    let e = error("");
    assert!(e.contains("no projected volume source"), "{e}");
    let e =
        error("sources: []\n---\nkind: ConfigMap\nmetadata: {name: c}\n---\nkind: ConfigMap\nmetadata: {name: c}\n");
    assert_eq!(e, "document 3 (ConfigMap c): metadata.name: duplicate ConfigMap (also document 2 (ConfigMap c))");
}

// ---------------------------------------------------------------------------------------------
// Ownership.

const POD: &str = "
---
kind: Pod
metadata:
  name: web-0
  namespace: shop
  uid: 5f1c6d9e-8a43-4b8e-9d4b-3f0b2f1f2a10
  labels: {app: web, tier: front}
  annotations:
    note: \"say \\\"hi\\\"\\nbye\"
spec:
  securityContext: {fsGroup: 2000}
  containers:
  - name: app
    image: nginx
    resources:
      limits: {cpu: 500m, memory: 128Mi}
      requests: {cpu: 250m}
";

#[test]
fn fs_group_owns_everything_and_adds_group_read() {
    let p = project(&format!(
        "sources:\n- configMap:\n    name: app\n    items:\n    - {{key: app.yaml, path: d/app.yaml, mode: 0400}}\n    - {{key: log.level, path: level, mode: 0600}}\n{APP}{POD}"
    ));
    assert_eq!((file(&p, "d/app.yaml").mode, file(&p, "d/app.yaml").gid), (0o440, 2000));
    assert_eq!(file(&p, "level").mode, 0o640);
    let d = dir(&p, "d");
    assert_eq!((d.mode, d.gid), (0o2755, 2000));
    let layout = p.layout();
    assert_eq!((layout.root_mode, layout.dir_mode, layout.gid, layout.fs_group), (0o3777, 0o2755, 2000, Some(2000)));
}

#[test]
fn token_files_are_0600_with_fs_user_or_fs_group_then_0640_with_fs_group() {
    let token = "---\nkind: ServiceAccountToken\ntoken: tok\n";
    let p = project(&format!("sources:\n- serviceAccountToken: {{path: token}}\ndefaultMode: 0444\n{token}"));
    assert_eq!((file(&p, "token").mode, file(&p, "token").uid), (0o444, 0));
    let p = project(&format!("sources:\n- serviceAccountToken: {{path: token}}\n{token}{POD}"));
    assert_eq!((file(&p, "token").mode, file(&p, "token").gid), (0o640, 2000));
    // Every container runs as 1000: fsUser 1000 owns the token.
    let pod = "---\nkind: Pod\nmetadata: {name: p}\nspec:\n  securityContext: {runAsUser: 1000}\n  containers:\n  - {name: a}\n  - {name: b, securityContext: {runAsUser: 1000}}\n";
    let p = project(&format!("sources:\n- serviceAccountToken: {{path: token}}\n{token}{pod}"));
    assert_eq!((file(&p, "token").mode, file(&p, "token").uid, file(&p, "token").gid), (0o600, 1000, 0));
    // Containers that differ: no fsUser.
    let p = project(&format!(
        "sources:\n- serviceAccountToken: {{path: token}}\n{token}{}",
        pod.replace("runAsUser: 1000}}", "runAsUser: 1001}}")
    ));
    assert_eq!((file(&p, "token").mode, file(&p, "token").uid), (0o644, 0));
}

#[test]
fn tokens_match_their_audience() {
    let docs = "---\nkind: ServiceAccountToken\ntoken: default-tok\n---\nkind: ServiceAccountToken\naudience: vault\ntoken: vault-tok\n";
    let p = project(&format!(
        "sources:\n- serviceAccountToken: {{path: a}}\n- serviceAccountToken: {{path: b, audience: vault, expirationSeconds: 600}}\n- serviceAccountToken: {{path: c, audience: other}}\n{docs}"
    ));
    assert_eq!(
        (text(&p, "a"), text(&p, "b"), text(&p, "c")),
        ("default-tok".into(), "vault-tok".into(), "default-tok".into())
    );
    let e = error("sources:\n- serviceAccountToken: {path: t, audience: vault}\n");
    assert!(
        e.starts_with("document 1 (projected): sources[0].serviceAccountToken: no ServiceAccountToken document"),
        "{e}"
    );
    let e = error(&format!("sources:\n- serviceAccountToken: {{path: t, expirationSeconds: 599}}\n{docs}"));
    assert_eq!(
        e,
        "document 1 (projected): sources[0].serviceAccountToken.expirationSeconds: may not specify a duration less than 10 minutes"
    );
}

// ---------------------------------------------------------------------------------------------
// Downward API.

#[test]
fn downward_api_metadata_fields() {
    let items = [
        ("name", "metadata.name"),
        ("namespace", "metadata.namespace"),
        ("uid", "metadata.uid"),
        ("labels", "metadata.labels"),
        ("annotations", "metadata.annotations"),
        ("app", "metadata.labels['app']"),
        ("missing", "metadata.labels['nope']"),
    ];
    let list: String = items
        .iter()
        .map(|(path, field)| format!("    - {{path: {path}, fieldRef: {{fieldPath: \"{field}\"}}}}\n"))
        .collect();
    let p = project(&format!("sources:\n- downwardAPI:\n    items:\n{list}{POD}"));
    assert_eq!(text(&p, "name"), "web-0");
    assert_eq!(text(&p, "namespace"), "shop");
    assert_eq!(text(&p, "uid"), "5f1c6d9e-8a43-4b8e-9d4b-3f0b2f1f2a10");
    assert_eq!(text(&p, "labels"), "app=\"web\"\ntier=\"front\"");
    assert_eq!(text(&p, "annotations"), "note=\"say \\\"hi\\\"\\nbye\"");
    assert_eq!(text(&p, "app"), "web");
    assert_eq!(text(&p, "missing"), "");
    assert_eq!(file(&p, "labels").mode, 0o644 | 0o440);
}

#[test]
fn downward_api_resources_round_up_by_divisor() {
    let node = "---\nkind: Node\nmetadata: {name: n1}\nstatus:\n  allocatable: {cpu: '2', memory: 8Gi, ephemeral-storage: 100Gi}\n";
    let items = [
        ("cpu_limit", "limits.cpu", ""),
        ("cpu_limit_m", "limits.cpu", "1m"),
        ("cpu_request_m", "requests.cpu", "1m"),
        ("mem_limit_mi", "limits.memory", "1Mi"),
        ("mem_request", "requests.memory", ""),
        ("storage_limit_gi", "limits.ephemeral-storage", "1Gi"),
        ("storage_request", "requests.ephemeral-storage", ""),
    ];
    let list: String = items
        .iter()
        .map(|(path, res, div)| {
            let div = if div.is_empty() { String::new() } else { format!(", divisor: {div}") };
            format!("    - {{path: {path}, resourceFieldRef: {{containerName: app, resource: {res}{div}}}}}\n")
        })
        .collect();
    let p = project(&format!("sources:\n- downwardAPI:\n    items:\n{list}{POD}{node}"));
    assert_eq!(text(&p, "cpu_limit"), "1"); // 500m rounded up
    assert_eq!(text(&p, "cpu_limit_m"), "500");
    assert_eq!(text(&p, "cpu_request_m"), "250");
    assert_eq!(text(&p, "mem_limit_mi"), "128");
    assert_eq!(text(&p, "mem_request"), (128 << 20).to_string()); // defaults to the limit
    assert_eq!(text(&p, "storage_limit_gi"), "100"); // unset limit: the node's allocatable
    assert_eq!(text(&p, "storage_request"), "0");
}

#[test]
fn downward_api_errors_name_the_field() {
    let e = error(&format!(
        "sources:\n- downwardAPI: {{items: [{{path: x, resourceFieldRef: {{containerName: db, resource: limits.cpu}}}}]}}\n{POD}"
    ));
    assert_eq!(
        e,
        "document 1 (projected): sources[0].downwardAPI.items[0].resourceFieldRef.containerName: container db not found in the Pod document"
    );
    let e = error("sources:\n- downwardAPI: {items: [{path: x, fieldRef: {fieldPath: metadata.name}}]}\n");
    assert!(e.starts_with("document 1 (projected): sources[0].downwardAPI.items[0]: needs a Pod document"), "{e}");
    let e = error("sources:\n- downwardAPI: {items: [{path: x, fieldRef: {fieldPath: spec.nodeName}}]}\n");
    assert!(
        e.starts_with("document 1 (projected): sources[0].downwardAPI.items[0].fieldRef.fieldPath: unsupported value"),
        "{e}"
    );
    let e = error("sources:\n- downwardAPI: {items: [{path: x, resourceFieldRef: {containerName: app, resource: limits.cpu, divisor: 10m}}]}\n");
    assert!(e.starts_with("document 1 (projected): sources[0].downwardAPI.items[0].resourceFieldRef.divisor: 10m: only divisor's values 1m, 1"), "{e}");
    let e = error("sources:\n- downwardAPI: {items: [{path: x}]}\n");
    assert_eq!(
        e,
        "document 1 (projected): sources[0].downwardAPI.items[0]: one of fieldRef and resourceFieldRef is required"
    );
    let e = error(
        "sources:\n- downwardAPI: {items: [{path: x, resourceFieldRef: {containerName: app, resource: limits.gpu}}]}\n",
    );
    assert!(e.contains("resourceFieldRef.resource: unsupported value \"limits.gpu\""), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Generations.

fn tree_with(data: &[(&str, &str)]) -> Projection {
    let data: String = data.iter().map(|(k, v)| format!("  {k}: '{v}'\n")).collect();
    project(&format!("sources:\n- configMap: {{name: c}}\n---\nkind: ConfigMap\nmetadata: {{name: c}}\ndata:\n{data}"))
}

fn bytes_at(node: &std::sync::Arc<live::Node>, path: &str) -> String {
    String::from_utf8(node.resolve(path).unwrap().content().unwrap().bytes().to_vec()).unwrap()
}

#[test]
fn the_root_holds_data_link_the_generation_and_one_symlink_per_top_level_name() {
    let tree = Tree::new(&project(&with_app(
        "sources:\n- configMap: {name: app, items: [{key: app.yaml, path: conf/app.yaml}, {key: log.level, path: level}]}\n",
    )));
    let generation = tree.generation();
    let stamp = generation.strip_prefix("..").unwrap();
    let (time, n) = stamp.rsplit_once('.').unwrap();
    assert_eq!(time.len(), "2016_02_01_15_04_05".len(), "{generation}");
    assert!(time.split('_').all(|p| p.chars().all(|c| c.is_ascii_digit())) && n.parse::<u32>().is_ok(), "{generation}");
    let root: Vec<(String, Option<String>)> =
        tree.list_root().iter().map(|(name, node)| (name.clone(), node.target().map(str::to_string))).collect();
    assert_eq!(
        root,
        [
            (generation.clone(), None),
            (DATA_LINK.into(), Some(generation.clone())),
            ("conf".into(), Some("..data/conf".into())),
            ("level".into(), Some("..data/level".into())),
        ]
    );
    let attr = tree.root_attr();
    assert_eq!((attr.ino, attr.kind, attr.perm), (ROOT_INO, Kind::Dir, 0o1777));
    let dir = tree.lookup_root(&generation).unwrap().node;
    assert_eq!((dir.attr().perm, dir.attr().kind), (0o755, Kind::Dir));
    assert_eq!(bytes_at(&dir, "conf/app.yaml"), "port: 8080\n");
}

#[test]
fn an_update_swaps_in_a_whole_new_generation() {
    let tree = Tree::new(&tree_with(&[("a", "1"), ("b", "1")]));
    let first = tree.generation();
    let old_dir = tree.payload();
    let old_file = old_dir.child("a").unwrap().clone();
    let update = tree.update(&tree_with(&[("a", "2"), ("c", "2")]));
    assert!(update.changed);
    assert_ne!(update.generation, first);
    assert_eq!(update.old_generation, first);
    assert_eq!(update.added, ["c"]);
    assert_eq!(update.removed.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["b"]);
    assert_eq!(tree.lookup_root(DATA_LINK).unwrap().node.target(), Some(update.generation.as_str()));
    assert_eq!(bytes_at(&tree.payload(), "a"), "2");
    // Whoever held the old file keeps its bytes; the old directory is no longer listed but can
    // still be looked up for a while, and not kept by the kernel.
    assert_eq!(old_file.content().unwrap().bytes(), b"1");
    assert!(tree.list_root().iter().all(|(n, _)| *n != first));
    let retired = tree.lookup_root(&first).unwrap();
    assert!(!retired.stable);
    assert_eq!(bytes_at(&retired.node, "b"), "1");
    // Every node of the new generation has a new inode number.
    assert_ne!(tree.payload().ino(), old_dir.ino());
    assert_ne!(tree.payload().child("a").unwrap().ino(), old_file.ino());
    assert!(tree.lookup_root("b").is_none());
}

#[test]
fn an_update_with_the_same_content_keeps_the_generation() {
    let tree = Tree::new(&tree_with(&[("a", "1")]));
    let first = tree.generation();
    let ino = tree.payload().ino();
    // Modes are not compared, as the kubelet compares content only.
    let same = project(
        "sources:\n- configMap: {name: c}\ndefaultMode: 0400\n---\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: '1'}\n",
    );
    let update = tree.update(&same);
    assert!(!update.changed);
    assert_eq!((tree.generation(), tree.payload().ino()), (first, ino));
    assert_eq!(tree.payload().child("a").unwrap().attr().perm, 0o644);
}

/// Kilobytes of this process's memory locked against swapping.
fn locked_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmLck:")).expect("VmLck in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn secret_bytes_are_locked_in_memory_while_held_and_plain_bytes_are_not() {
    const MIB: usize = 1 << 20;
    let payload = vec![7u8; 4 * MIB];
    let before = locked_kib();
    let secret = Content::new(&payload, true);
    let shared = secret.clone();
    let held = locked_kib();
    assert!(held >= before + 4096, "4 MiB of secret bytes are locked: {before} kB → {held} kB");
    assert_eq!(shared.bytes(), &payload[..]);
    assert!(format!("{shared:?}").contains("secret redacted"));
    drop(secret);
    assert!(locked_kib() >= held - 16, "a clone still holds the bytes, still locked");
    drop(shared);
    let after = locked_kib();
    assert!(after + 4000 <= held, "the last holder unlocks them: {held} kB → {after} kB");
    let plain = Content::new(&payload, false);
    assert!(locked_kib() < after + 1024, "plain bytes are not locked");
    assert_eq!(plain, Content::new(&payload, false));
    assert_ne!(plain, Content::new(&payload, true), "secret and plain content differ");
}
