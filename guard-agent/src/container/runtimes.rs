//! What each runtime keeps on disk about a container, read with serde_json: Docker's
//! `config.v2.json`, the OCI bundle `config.json` of containerd (CRI annotations) and CRI-O,
//! and the kubelet's pod log directories.
use std::{
    collections::BTreeMap,
    fs,
    io::Read as _,
    path::{Path, PathBuf},
};

use serde_json::Value;

use super::{Info, Pod, Runtime, Roots};

/// Largest runtime file read (Docker's config.v2.json is a few KiB).
const MAX_FILE: u64 = 4 << 20;
/// Most containerd namespaces looked through for a container's bundle.
const MAX_NAMESPACES: usize = 64;

fn read_json(path: &Path) -> Option<Value> {
    let file = fs::File::open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = Vec::new();
    file.take(MAX_FILE).read_to_end(&mut text).ok()?;
    serde_json::from_slice(&text).ok()
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned()))).collect())
        .unwrap_or_default()
}

fn text(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// Fills `info` from the first runtime that knows container `id` (the one the cgroup named
/// first, when it named one).
pub(super) fn read(roots: &Roots, id: &str, info: &mut Info) {
    let order: Vec<Runtime> = match info.runtime {
        Some(r) => vec![r],
        None => vec![Runtime::Containerd, Runtime::Crio, Runtime::Docker],
    };
    for rt in order {
        let found = match rt {
            Runtime::Docker => docker(roots, id, info),
            Runtime::Containerd => containerd(roots, id, info),
            Runtime::Crio => crio(roots, id, info),
        };
        if found {
            info.runtime = Some(rt);
            return;
        }
    }
}

/// Kubernetes' own labels on a container (cri-dockerd, CRI-O): the pod it belongs to.
fn pod_from_labels(labels: &BTreeMap<String, String>) -> Option<Pod> {
    let uid = labels.get("io.kubernetes.pod.uid")?.clone();
    Some(Pod {
        uid,
        name: labels.get("io.kubernetes.pod.name").cloned(),
        namespace: labels.get("io.kubernetes.pod.namespace").cloned(),
        labels: BTreeMap::new(),
    })
}

/// The labels of a pod's sandbox without Kubernetes' own: the pod's labels.
fn pod_labels(sandbox: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    sandbox.iter().filter(|(k, _)| !k.starts_with("io.kubernetes.")).map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn docker(roots: &Roots, id: &str, info: &mut Info) -> bool {
    let path = roots.docker.join("containers").join(id).join("config.v2.json");
    let Some(v) = read_json(&path) else { return false };
    info.labels = string_map(v.pointer("/Config/Labels"));
    info.name = info
        .labels
        .get("io.kubernetes.container.name")
        .cloned()
        .or_else(|| text(&v, "/Name").map(|n| n.trim_start_matches('/').to_owned()));
    info.image = text(&v, "/Config/Image");
    info.image_id = text(&v, "/Image");
    info.pod = pod_from_labels(&info.labels);
    if let Some(pod) = &mut info.pod {
        // cri-dockerd: the sandbox (pause) container carries the pod's labels.
        let sandbox = info.labels.get("io.kubernetes.sandbox.id").cloned();
        let sandbox_labels = match sandbox {
            Some(s) if s != id => read_json(&roots.docker.join("containers").join(&s).join("config.v2.json"))
                .map(|sv| string_map(sv.pointer("/Config/Labels")))
                .unwrap_or_default(),
            _ => info.labels.clone(),
        };
        pod.labels = pod_labels(&sandbox_labels);
    }
    info.source = Some(path.display().to_string());
    true
}

fn containerd(roots: &Roots, id: &str, info: &mut Info) -> bool {
    let tasks = roots.containerd.join("io.containerd.runtime.v2.task");
    // Kubernetes' namespace first, then any other (nerdctl's `default`, Docker's `moby`).
    let mut candidates: Vec<PathBuf> = vec![tasks.join("k8s.io").join(id).join("config.json")];
    if let Ok(entries) = fs::read_dir(&tasks) {
        candidates.extend(entries.flatten().take(MAX_NAMESPACES).filter(|e| e.file_name() != "k8s.io").map(|e| e.path().join(id).join("config.json")));
    }
    let Some((path, v)) = candidates.into_iter().find_map(|p| read_json(&p).map(|v| (p, v))) else { return false };
    let a = string_map(v.get("annotations"));
    info.name = a.get("io.kubernetes.cri.container-name").or_else(|| a.get("nerdctl/name")).cloned();
    info.image = a.get("io.kubernetes.cri.image-name").cloned();
    if let Some(uid) = a.get("io.kubernetes.cri.sandbox-uid") {
        info.pod = Some(Pod {
            uid: uid.clone(),
            name: a.get("io.kubernetes.cri.sandbox-name").cloned(),
            namespace: a.get("io.kubernetes.cri.sandbox-namespace").cloned(),
            labels: BTreeMap::new(),
        });
    }
    info.source = Some(path.display().to_string());
    true
}

fn crio(roots: &Roots, id: &str, info: &mut Info) -> bool {
    let userdata = |id: &str| roots.crio.join("overlay-containers").join(id).join("userdata").join("config.json");
    let path = userdata(id);
    let Some(v) = read_json(&path) else { return false };
    let a = string_map(v.get("annotations"));
    // Labels are a JSON object inside an annotation.
    let labels_of = |a: &BTreeMap<String, String>| {
        a.get("io.kubernetes.cri-o.Labels").and_then(|l| serde_json::from_str::<Value>(l).ok()).map(|l| string_map(Some(&l))).unwrap_or_default()
    };
    info.labels = labels_of(&a);
    info.name = info.labels.get("io.kubernetes.container.name").cloned().or_else(|| a.get("io.kubernetes.container.name").cloned());
    info.image = a.get("io.kubernetes.cri-o.ImageName").cloned();
    info.image_id = a.get("io.kubernetes.cri-o.ImageRef").cloned();
    let mut with_pod = info.labels.clone();
    for key in ["io.kubernetes.pod.uid", "io.kubernetes.pod.name", "io.kubernetes.pod.namespace"] {
        if let Some(value) = a.get(key) {
            with_pod.entry(key.to_owned()).or_insert_with(|| value.clone());
        }
    }
    info.pod = pod_from_labels(&with_pod);
    if let Some(pod) = &mut info.pod {
        let sandbox = a.get("io.kubernetes.cri-o.SandboxID").filter(|s| s.as_str() != id);
        let sandbox_labels = match sandbox {
            Some(s) => read_json(&userdata(s)).map(|sv| labels_of(&string_map(sv.get("annotations")))).unwrap_or_default(),
            None => info.labels.clone(),
        };
        pod.labels = pod_labels(&sandbox_labels);
    }
    info.source = Some(path.display().to_string());
    true
}

/// The kubelet's `<namespace>_<pod>_<uid>` log directory of pod `uid`: (namespace, name).
/// Neither a namespace nor a pod name can contain `_`.
pub(super) fn pod_log_dir(root: &Path, uid: &str) -> Option<(String, String)> {
    let suffix = format!("_{uid}");
    fs::read_dir(root).ok()?.flatten().find_map(|e| {
        let name = e.file_name().into_string().ok()?;
        let rest = name.strip_suffix(&suffix)?;
        let (ns, pod) = rest.split_once('_')?;
        (!ns.is_empty() && !pod.is_empty() && !pod.contains('_')).then(|| (ns.to_owned(), pod.to_owned()))
    })
}
