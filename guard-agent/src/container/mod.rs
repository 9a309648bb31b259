//! Container workloads: which container (and Kubernetes pod) a cgroup belongs to, read from the
//! cgroup paths container runtimes create, and what the runtime keeps about it on disk (image,
//! names, labels), for policy `match: container` / `pod` and for verdicts.
//!
//! Cgroup shapes recognised (cgroup v2; systemd and cgroupfs drivers):
//! - Docker: `…/docker-<id>.scope` (systemd), `…/docker/<id>` (cgroupfs);
//! - containerd (CRI): `…/cri-containerd-<id>.scope`;
//! - CRI-O: `…/crio-<id>.scope` (not `crio-conmon-<id>.scope`, its monitor);
//! - Kubernetes pods: `kubepods[-<qos>]-pod<uid>.slice` (systemd, `_` for `-` in the uid),
//!   `kubepods/[<qos>/]pod<uid>/<id>` (cgroupfs: the runtime is told by its data on disk).
pub mod matcher;
mod runtimes;

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{Arc, OnceLock},
};

use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Docker,
    Containerd,
    Crio,
}

impl Runtime {
    pub const NAMES: [&'static str; 3] = ["docker", "containerd", "crio"];

    pub fn name(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Containerd => "containerd",
            Self::Crio => "crio",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "docker" => Some(Self::Docker),
            "containerd" => Some(Self::Containerd),
            "crio" | "cri-o" => Some(Self::Crio),
            _ => None,
        }
    }
}

/// What a cgroup path alone says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupIds {
    /// Known from the name (`docker-…`, `cri-containerd-…`, `crio-…`); `None` for a cgroupfs
    /// pod's container (found from the runtimes' data).
    pub runtime: Option<Runtime>,
    /// The container id (64 hex digits), when the path is a container's cgroup or below one.
    pub id: Option<String>,
    pub pod_uid: Option<String>,
    /// The container's own cgroup is the last component of the path (not a cgroup below it).
    pub leaf_is_container: bool,
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn is_uid(s: &str) -> bool {
    s.len() == 36 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// The container and pod a cgroup path (relative to the cgroup v2 root) belongs to; `None`
/// when it is neither a container's nor a pod's.
pub fn from_cgroup(path: &str) -> Option<CgroupIds> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let mut out = CgroupIds::default();
    let mut in_kubepods = false;
    for (i, c) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let scoped = c.strip_suffix(".scope").and_then(|s| {
            [("docker-", Runtime::Docker), ("cri-containerd-", Runtime::Containerd), ("crio-", Runtime::Crio)]
                .into_iter()
                .find_map(|(prefix, rt)| s.strip_prefix(prefix).filter(|id| is_id(id)).map(|id| (rt, id)))
        });
        if let Some((rt, id)) = scoped {
            out.runtime = Some(rt);
            out.id = Some(id.to_owned());
            out.leaf_is_container = last;
        } else if is_id(c) && (in_kubepods || (i > 0 && parts[i - 1] == "docker")) {
            out.runtime = (!in_kubepods).then_some(Runtime::Docker);
            out.id = Some((*c).to_owned());
            out.leaf_is_container = last;
        } else if c.starts_with("kubepods") {
            in_kubepods = true;
            if let Some(uid) = c.strip_suffix(".slice").and_then(|s| s.rsplit_once("-pod")).map(|(_, u)| u.replace('_', "-"))
                && is_uid(&uid)
            {
                out.pod_uid = Some(uid);
            }
        } else if let Some(uid) = c.strip_prefix("pod").filter(|u| in_kubepods && is_uid(u)) {
            out.pod_uid = Some(uid.to_owned());
        } else {
            out.leaf_is_container = false;
        }
    }
    (out.id.is_some() || out.pod_uid.is_some()).then_some(out)
}

/// Where the runtimes keep their data (`containers:` in the settings file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    /// Docker's data root: `containers/<id>/config.v2.json`.
    pub docker: PathBuf,
    /// containerd's state directory: `io.containerd.runtime.v2.task/<namespace>/<id>/config.json`
    /// (the OCI bundle, with the CRI plugin's `io.kubernetes.cri.*` annotations).
    pub containerd: PathBuf,
    /// CRI-O's (containers/storage) run root: `overlay-containers/<id>/userdata/config.json`.
    pub crio: PathBuf,
    /// The kubelet's pod log directories, `<namespace>_<pod>_<uid>`: pod names for any runtime.
    pub pod_logs: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Self {
            docker: "/var/lib/docker".into(),
            containerd: "/run/containerd".into(),
            crio: "/run/containers/storage".into(),
            pod_logs: "/var/log/pods".into(),
        }
    }
}

static ROOTS: OnceLock<Roots> = OnceLock::new();

/// Sets the roots for this process (the daemon, at start, from its settings).
pub fn set_roots(roots: Roots) {
    let _ = ROOTS.set(roots);
}

pub fn roots() -> &'static Roots {
    ROOTS.get_or_init(Roots::default)
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pod {
    pub uid: String,
    pub name: Option<String>,
    pub namespace: Option<String>,
    /// The pod's labels, where the runtime keeps them on disk (Docker with cri-dockerd: the
    /// sandbox's labels; CRI-O: the sandbox's). containerd keeps them only in its database.
    pub labels: BTreeMap<String, String>,
}

/// A container as verdicts and `match: container` see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Info {
    pub id: Option<String>,
    pub runtime: Option<Runtime>,
    pub name: Option<String>,
    /// As the runtime was asked for it (`python:3.12`, `ghcr.io/acme/agent@sha256:…`).
    pub image: Option<String>,
    /// The image's id (`sha256:…`), where known.
    pub image_id: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub pod: Option<Pod>,
    /// The runtime's file the identity was read from; `None`: from the cgroup path alone.
    pub source: Option<String>,
}

/// Reads what the runtimes keep on disk about the container (and pod) of `ids`. Anything
/// missing, unreadable or malformed is left out.
pub fn lookup(roots: &Roots, ids: &CgroupIds) -> Info {
    let mut info = Info { id: ids.id.clone(), runtime: ids.runtime, ..Default::default() };
    if let Some(id) = &ids.id {
        runtimes::read(roots, id, &mut info);
    }
    let uid = info.pod.as_ref().map(|p| p.uid.clone()).or_else(|| ids.pod_uid.clone());
    if let Some(uid) = uid {
        let pod = info.pod.get_or_insert_with(|| Pod { uid: uid.clone(), ..Default::default() });
        if (pod.name.is_none() || pod.namespace.is_none())
            && let Some((ns, name)) = runtimes::pod_log_dir(&roots.pod_logs, &uid)
        {
            pod.namespace.get_or_insert(ns);
            pod.name.get_or_insert(name);
        }
    }
    info
}

impl Info {
    /// Does the identity need the runtime's data (it could not be read)?
    pub fn has_metadata(&self) -> bool {
        self.source.is_some()
    }

    /// OCSF `container` (1.4.0: `uid`, `name`, `runtime`, `image` {`name`, `tag`, `uid`,
    /// `labels`}, `labels`, `orchestrator`, `pod_uuid`). Labels are `key=value` strings.
    pub fn ocsf(&self) -> Value {
        let labels = |m: &BTreeMap<String, String>| m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>();
        let mut c = serde_json::Map::new();
        let mut put = |k: &str, v: Value| {
            if !v.is_null() && v != json!([]) {
                c.insert(k.into(), v);
            }
        };
        put("uid", json!(self.id));
        put("name", json!(self.name));
        put("runtime", json!(self.runtime.map(Runtime::name)));
        if let Some(image) = &self.image {
            let (name, tag) = split_image(image);
            let mut i = serde_json::Map::new();
            i.insert("name".into(), json!(name));
            if let Some(t) = tag {
                i.insert("tag".into(), json!(t));
            }
            if let Some(u) = &self.image_id {
                i.insert("uid".into(), json!(u));
            }
            put("image", Value::Object(i));
        }
        put("labels", json!(labels(&self.labels)));
        if let Some(p) = &self.pod {
            put("orchestrator", json!("Kubernetes"));
            put("pod_uuid", json!(p.uid));
        }
        Value::Object(c)
    }

    /// What OCSF has no place for: `unmapped.container` (the pod's name, namespace and labels
    /// as a map, the container's labels as a map, where the identity came from).
    pub fn unmapped(&self) -> Value {
        json!({
            "id": self.id,
            "runtime": self.runtime.map(Runtime::name),
            "labels": self.labels,
            "source": self.source,
            "pod": self.pod.as_ref().map(|p| json!({
                "uid": p.uid, "name": p.name, "namespace": p.namespace, "labels": p.labels,
            })),
        })
    }
}

/// `repo/name:tag` -> (`repo/name`, `tag`); a digest (`@sha256:…`) stays in the name.
fn split_image(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
        _ => (image, None),
    }
}

/// Adds the container identity of `path` to an emitted OCSF object (`container`,
/// `unmapped.container`, the `container` profile); a finding's evidence gets it too.
pub fn annotate(value: &mut Value, info: &Info) {
    let Some(obj) = value.as_object_mut() else { return };
    obj.insert("container".into(), info.ocsf());
    if let Some(u) = obj.get_mut("unmapped").and_then(Value::as_object_mut) {
        u.insert("container".into(), info.unmapped());
    }
    if let Some(p) = obj.get_mut("metadata").and_then(|m| m.get_mut("profiles")).and_then(Value::as_array_mut)
        && !p.iter().any(|x| x == "container")
    {
        p.push(json!("container"));
    }
    if let Some(e) = obj.get_mut("evidences").and_then(Value::as_array_mut).and_then(|e| e.first_mut()).and_then(Value::as_object_mut) {
        e.insert("container".into(), info.ocsf());
    }
}

/// The identities of container cgroups verdicts are about, read once per cgroup (bounded).
/// A container whose runtime data is not there yet is looked up again next time.
#[derive(Default)]
pub struct Cache {
    known: HashMap<String, Option<Arc<Info>>>,
}

impl Cache {
    const CAP: usize = 4096;

    pub fn of_cgroup(&mut self, path: &str) -> Option<Arc<Info>> {
        if let Some(hit) = self.known.get(path) {
            return hit.clone();
        }
        let found = from_cgroup(path).map(|ids| Arc::new(lookup(roots(), &ids)));
        // Cache what is final: not a container, or a container with its runtime's data.
        if found.as_ref().is_none_or(|i| i.has_metadata()) {
            if self.known.len() >= Self::CAP {
                self.known.clear();
            }
            self.known.insert(path.to_owned(), found.clone());
        }
        found
    }
}

#[cfg(test)]
mod tests;
