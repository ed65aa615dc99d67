//! Running a pod's containers through the local Docker daemon (`mountd serve --runtime
//! docker`): each container gets its prepared mounts bound at their mountPaths, its image,
//! command, args, env, workingDir and user; the pod's restartPolicy becomes Docker's restart
//! policy, so a container that exits comes back with its volumes as they were. Containers are
//! found again by the pod uid label; statuses are read back into the pod.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, EnvVar, Pod,
};

use super::pods::{MountSource, PodMount};

const UID_LABEL: &str = "io.kubernetes.pod.uid";

/// How mountd reaches Docker: the client binary and, when not the default, the daemon's host.
#[derive(Clone, Debug)]
pub struct Docker {
    pub bin: PathBuf,
    pub host: Option<String>,
}

fn container_name(pod: &Pod, container: &str) -> String {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    format!("k8s_{container}_{name}_{ns}_{uid}_0")
}

impl Docker {
    async fn run(&self, args: &[String]) -> Result<String, String> {
        let mut command = tokio::process::Command::new(&self.bin);
        if let Some(host) = &self.host {
            command.arg("-H").arg(host);
        }
        let out = command
            .args(args)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("running {}: {e}", self.bin.display()))?;
        if !out.status.success() {
            return Err(format!(
                "docker {}: {}",
                args.first().map_or("", String::as_str),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Starts every container of the pod that is not there yet.
    pub async fn start(&self, pod: &Pod, mounts: &[PodMount], config_maps: &[ConfigMap]) -> Result<(), String> {
        let spec = pod.spec.as_ref().ok_or("the pod has no spec")?;
        let existing = self.containers_of(pod).await?;
        for container in &spec.containers {
            let name = container_name(pod, &container.name);
            if existing.contains_key(&name) {
                continue;
            }
            let args = run_args(pod, container, &name, mounts, config_maps)?;
            self.run(&args).await?;
            tracing::info!(pod = %pod.metadata.name.as_deref().unwrap_or(""), container = %container.name, "started container");
        }
        Ok(())
    }

    /// Removes every container of the pod (running or not).
    pub async fn remove(&self, pod: &Pod) -> Result<(), String> {
        let names: Vec<String> = self.containers_of(pod).await?.into_keys().collect();
        if names.is_empty() {
            return Ok(());
        }
        let mut args = vec!["rm".to_string(), "-f".to_string(), "-v".to_string()];
        args.extend(names);
        self.run(&args).await.map(|_| ())
    }

    /// The pod's containers by name, with their ids.
    async fn containers_of(&self, pod: &Pod) -> Result<BTreeMap<String, String>, String> {
        let uid = pod.metadata.uid.as_deref().unwrap_or("");
        let out = self
            .run(&[
                "ps".into(),
                "-a".into(),
                "--filter".into(),
                format!("label={UID_LABEL}={uid}"),
                "--format".into(),
                "{{.Names}} {{.ID}}".into(),
            ])
            .await?;
        Ok(out.lines().filter_map(|l| l.split_once(' ')).map(|(n, id)| (n.to_string(), id.to_string())).collect())
    }

    /// The containers' statuses as the kubelet reports them.
    pub async fn statuses(&self, pod: &Pod) -> Result<Vec<ContainerStatus>, String> {
        let spec = pod.spec.as_ref().ok_or("the pod has no spec")?;
        let mut statuses = Vec::new();
        for container in &spec.containers {
            let name = container_name(pod, &container.name);
            let format = "{{.State.Status}}|{{.State.ExitCode}}|{{.RestartCount}}|{{.Id}}|{{.State.StartedAt}}|{{.State.FinishedAt}}";
            let inspected = self.run(&["inspect".into(), "--format".into(), format.into(), name]).await;
            let mut status = ContainerStatus {
                name: container.name.clone(),
                image: container.image.clone().unwrap_or_default(),
                ..Default::default()
            };
            match inspected {
                Ok(text) => {
                    let f: Vec<&str> = text.split('|').collect();
                    let state = f.first().copied().unwrap_or("");
                    status.restart_count = f.get(2).and_then(|c| c.parse().ok()).unwrap_or(0);
                    status.container_id = f.get(3).map(|id| format!("docker://{id}"));
                    status.ready = state == "running";
                    status.started = Some(state == "running");
                    status.state = Some(match state {
                        "running" => {
                            ContainerState { running: Some(ContainerStateRunning::default()), ..Default::default() }
                        }
                        "exited" | "dead" => {
                            let code: i32 = f.get(1).and_then(|c| c.parse().ok()).unwrap_or(0);
                            let reason = if code == 0 { "Completed" } else { "Error" };
                            ContainerState {
                                terminated: Some(ContainerStateTerminated {
                                    exit_code: code,
                                    reason: Some(reason.into()),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }
                        }
                        other => ContainerState {
                            waiting: Some(ContainerStateWaiting {
                                reason: Some(if other == "restarting" {
                                    "CrashLoopBackOff".into()
                                } else {
                                    "ContainerCreating".into()
                                }),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    });
                }
                Err(_) => {
                    status.state = Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some("ContainerCreating".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                }
            }
            statuses.push(status);
        }
        Ok(statuses)
    }
}

/// `docker run` for one container.
fn run_args(
    pod: &Pod,
    container: &Container,
    name: &str,
    mounts: &[PodMount],
    config_maps: &[ConfigMap],
) -> Result<Vec<String>, String> {
    let spec = pod.spec.as_ref().ok_or("the pod has no spec")?;
    let image = container
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| format!("container {:?} has no image", container.name))?;
    let restart = match spec.restart_policy.as_deref().unwrap_or("Always") {
        "Always" => "always",
        "OnFailure" => "on-failure",
        _ => "no",
    };
    let mut args: Vec<String> =
        vec!["run", "-d", "--network", "none", "--restart", restart].into_iter().map(String::from).collect();
    args.extend([
        "--name".into(),
        name.into(),
        "--label".into(),
        format!("{UID_LABEL}={}", pod.metadata.uid.as_deref().unwrap_or("")),
    ]);
    let pod_security = spec.security_context.as_ref();
    let user =
        container.security_context.as_ref().and_then(|s| s.run_as_user).or(pod_security.and_then(|s| s.run_as_user));
    let group =
        container.security_context.as_ref().and_then(|s| s.run_as_group).or(pod_security.and_then(|s| s.run_as_group));
    if let Some(user) = user {
        args.extend(["--user".into(), group.map_or(user.to_string(), |g| format!("{user}:{g}"))]);
    }
    if let Some(fs_group) = pod_security.and_then(|s| s.fs_group) {
        args.extend(["--group-add".into(), fs_group.to_string()]);
    }
    for supplemental in pod_security.and_then(|s| s.supplemental_groups.clone()).unwrap_or_default() {
        args.extend(["--group-add".into(), supplemental.to_string()]);
    }
    if let Some(dir) = &container.working_dir {
        args.extend(["--workdir".into(), dir.clone()]);
    }
    for env in container.env.iter().flatten() {
        if let Some(value) = env_value(pod, container, env, config_maps)? {
            args.extend(["--env".into(), format!("{}={value}", env.name)]);
        }
    }
    for m in mounts.iter().filter(|m| m.container == container.name) {
        let mut bind = format!("type=bind,source={},target={}", m.host_path.display(), m.mount_path);
        if m.read_only {
            bind.push_str(",readonly");
        }
        args.extend(["--mount".into(), bind]);
    }
    let command = container.command.clone().unwrap_or_default();
    if let Some(entry) = command.first() {
        args.extend(["--entrypoint".into(), entry.clone()]);
    }
    args.push(image);
    args.extend(command.into_iter().skip(1));
    args.extend(container.args.clone().unwrap_or_default());
    Ok(args)
}

/// An env var's value as the kubelet resolves it: a literal, a configMap key, or a field of
/// the pod. `None`: an optional source that is missing (the var is left out).
fn env_value(
    pod: &Pod,
    container: &Container,
    env: &EnvVar,
    config_maps: &[ConfigMap],
) -> Result<Option<String>, String> {
    let Some(from) = &env.value_from else { return Ok(Some(env.value.clone().unwrap_or_default())) };
    let what = format!("container {:?}: env {:?}", container.name, env.name);
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    if let Some(r) = &from.config_map_key_ref {
        let optional = r.optional.unwrap_or(false);
        let Some(map) = config_maps.iter().find(|c| {
            c.metadata.namespace.as_deref() == Some(ns) && c.metadata.name.as_deref() == Some(r.name.as_str())
        }) else {
            return if optional { Ok(None) } else { Err(format!("{what}: configmap {:?} not found", r.name)) };
        };
        return match map.data.as_ref().and_then(|d| d.get(&r.key)) {
            Some(v) => Ok(Some(v.clone())),
            None if optional => Ok(None),
            None => Err(format!("{what}: couldn't find key {} in ConfigMap {ns}/{}", r.key, r.name)),
        };
    }
    if let Some(r) = &from.field_ref {
        let meta = &pod.metadata;
        let pick = |map: &Option<BTreeMap<String, String>>, key: &str| {
            map.as_ref().and_then(|m| m.get(key).cloned()).unwrap_or_default()
        };
        let path = r.field_path.as_str();
        let value = match path {
            "metadata.name" => meta.name.clone().unwrap_or_default(),
            "metadata.namespace" => ns.to_string(),
            "metadata.uid" => meta.uid.clone().unwrap_or_default(),
            "spec.nodeName" => pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default(),
            "spec.serviceAccountName" => pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
            p if p.starts_with("metadata.labels['") && p.ends_with("']") => pick(&meta.labels, &p[17..p.len() - 2]),
            p if p.starts_with("metadata.annotations['") && p.ends_with("']") => pick(&meta.annotations, &p[22..p.len() - 2]),
            other => return Err(format!("{what}: fieldRef {other:?} is not served (metadata.name, metadata.namespace, metadata.uid, metadata.labels['K'], metadata.annotations['K'], spec.nodeName, spec.serviceAccountName)")),
        };
        return Ok(Some(value));
    }
    if from.secret_key_ref.is_some() {
        return Err(format!("{what}: a Secret as an env var would be written to disk in Docker's container config; mount the secret as a volume instead"));
    }
    Err(format!("{what}: valueFrom resourceFieldRef is not served; give a value"))
}

/// The kubelet's fsGroup pass over a writable volume: group-owned by fsGroup, group
/// read-write, directories setgid so new files keep the group.
pub fn set_volume_ownership(root: &Path, fs_group: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        std::os::unix::fs::lchown(&path, None, Some(fs_group))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.mode() & 0o7777;
        let wanted = if meta.is_dir() { mode | 0o2770 } else { mode | 0o660 };
        if wanted != mode {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(wanted))?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}

/// Whether a mount is a writable volume the fsGroup pass applies to.
pub fn owned_by_fs_group(m: &PodMount) -> bool {
    matches!(m.source, MountSource::Claim { .. } | MountSource::EmptyDir { .. } | MountSource::MemoryDir { .. })
        && !m.read_only
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_run_follows_the_container_spec() {
        let text = r#"
apiVersion: v1
kind: Pod
metadata: {name: app, namespace: default, uid: u1, labels: {tier: web}}
spec:
  restartPolicy: OnFailure
  securityContext: {runAsUser: 1000, fsGroup: 2000}
  containers:
  - name: main
    image: busybox:local
    command: [sh, -c]
    args: ["echo hi > /data/x"]
    workingDir: /data
    env:
    - {name: A, value: "1"}
    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: TIER, valueFrom: {fieldRef: {fieldPath: "metadata.labels['tier']"}}}
    - {name: LEVEL, valueFrom: {configMapKeyRef: {name: conf, key: level}}}
    - {name: MAYBE, valueFrom: {configMapKeyRef: {name: absent, key: k, optional: true}}}
    volumeMounts: [{name: d, mountPath: /data}]
  volumes: [{name: d, emptyDir: {}}]
"#;
        let Ok(super::super::object::Object::Pod(pod)) =
            super::super::object::parse_manifests(text, "-").map(|mut v| v.remove(0))
        else {
            panic!()
        };
        let mounts = vec![PodMount {
            container: "main".into(),
            volume: "d".into(),
            mount_path: "/data".into(),
            host_path: "/state/pods/u1/volumes/d/main/0".into(),
            read_only: true,
            source: MountSource::EmptyDir { volume_id: "v".into(), size: None, subpath: None },
        }];
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let conf =
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: conf, namespace: default}\ndata: {level: debug}\n";
        let Ok(super::super::object::Object::ConfigMap(conf)) =
            super::super::object::parse_manifests(conf, "-").map(|mut v| v.remove(0))
        else {
            panic!()
        };
        let args = run_args(&pod, container, "k8s_main_app_default_u1_0", &mounts, &[conf]).unwrap().join(" ");
        assert_eq!(
            args,
            "run -d --network none --restart on-failure --name k8s_main_app_default_u1_0 --label io.kubernetes.pod.uid=u1 \
             --user 1000 --group-add 2000 --workdir /data --env A=1 --env POD=app --env TIER=web --env LEVEL=debug \
             --mount type=bind,source=/state/pods/u1/volumes/d/main/0,target=/data,readonly --entrypoint sh busybox:local -c echo hi > /data/x"
        );
        let err = run_args(&pod, container, "n", &mounts, &[]).unwrap_err();
        assert!(err.contains("configmap \"conf\" not found") && err.contains("env \"LEVEL\""), "{err}");
    }
}
