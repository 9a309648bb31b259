use std::{collections::BTreeMap, fs, path::Path};

use serde_json::json;

use super::*;

const ID: &str = "3f2a9c0b1d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";
const UID: &str = "0c5b9a3e-1f2d-4c7b-9e8a-6d5f4c3b2a19";

fn ids(path: &str) -> CgroupIds {
    from_cgroup(path).unwrap_or_else(|| panic!("{path} is a container or pod cgroup"))
}

#[test]
fn cgroup_paths_of_each_runtime_and_driver() {
    let u = UID.replace('-', "_");
    let cases: Vec<(String, Option<Runtime>, bool, bool)> = vec![
        (format!("/system.slice/docker-{ID}.scope"), Some(Runtime::Docker), false, true),
        (format!("/docker/{ID}"), Some(Runtime::Docker), false, true),
        (format!("/system.slice/cri-containerd-{ID}.scope"), Some(Runtime::Containerd), false, true),
        (format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/cri-containerd-{ID}.scope"), Some(Runtime::Containerd), true, true),
        (format!("/kubepods.slice/kubepods-pod{u}.slice/crio-{ID}.scope"), Some(Runtime::Crio), true, true),
        (format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/docker-{ID}.scope"), Some(Runtime::Docker), true, true),
        (format!("/kubepods/besteffort/pod{UID}/{ID}"), None, true, true),
        (format!("/kubepods/pod{UID}/{ID}"), None, true, true),
        // Below a container's cgroup: its container, but not the container's own cgroup.
        (format!("/system.slice/docker-{ID}.scope/init.scope"), Some(Runtime::Docker), false, false),
    ];
    for (path, runtime, pod, leaf) in cases {
        let i = ids(&path);
        assert_eq!(i.runtime, runtime, "{path}");
        assert_eq!(i.id.as_deref(), Some(ID), "{path}");
        assert_eq!(i.pod_uid.as_deref(), pod.then_some(UID), "{path}");
        assert_eq!(i.leaf_is_container, leaf, "{path}");
    }
    // A pod's own slice: the pod, no container.
    let pod = ids(&format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice"));
    assert_eq!((pod.id, pod.pod_uid.as_deref()), (None, Some(UID)));
    for other in [
        "/system.slice/ssh.service".to_owned(),
        format!("/system.slice/crio-conmon-{ID}.scope"),
        format!("/system.slice/docker-{}.scope", &ID[..63]),
        format!("/system.slice/docker-{}.scope", ID.to_uppercase()),
        format!("/guard/a/{ID}"),
        "/kubepods.slice".to_owned(),
    ] {
        assert_eq!(from_cgroup(&other), None, "{other}");
    }
}

fn write(path: &Path, value: serde_json::Value) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, value.to_string()).unwrap();
}

fn temp_roots(tag: &str) -> (std::path::PathBuf, Roots) {
    let dir = std::env::temp_dir().join(format!("guard-containers-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let roots = Roots { docker: dir.join("docker"), containerd: dir.join("containerd"), crio: dir.join("crio"), pod_logs: dir.join("pods") };
    (dir, roots)
}

#[test]
fn identity_from_each_runtimes_data() {
    let (dir, roots) = temp_roots("lookup");
    // Docker, a plain container.
    write(&roots.docker.join(format!("containers/{ID}/config.v2.json")), json!({
        "ID": ID, "Name": "/coder", "Image": "sha256:abc",
        "Config": { "Image": "ghcr.io/acme/agent:1.2", "Labels": { "team": "ml" } },
    }));
    let i = lookup(&roots, &ids(&format!("/system.slice/docker-{ID}.scope")));
    assert_eq!((i.name.as_deref(), i.image.as_deref(), i.image_id.as_deref()), (Some("coder"), Some("ghcr.io/acme/agent:1.2"), Some("sha256:abc")));
    assert_eq!(i.labels, BTreeMap::from([("team".to_owned(), "ml".to_owned())]));
    assert!(i.pod.is_none() && i.has_metadata());
    // containerd under Kubernetes: the bundle's CRI annotations; no labels.
    let c_id = ID.replace('3', "4");
    write(&roots.containerd.join(format!("io.containerd.runtime.v2.task/k8s.io/{c_id}/config.json")), json!({
        "ociVersion": "1.1.0",
        "annotations": {
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": "agent",
            "io.kubernetes.cri.image-name": "docker.io/library/python:3.12",
            "io.kubernetes.cri.sandbox-name": "coder-7d9f",
            "io.kubernetes.cri.sandbox-namespace": "agents",
            "io.kubernetes.cri.sandbox-uid": UID,
        },
    }));
    let i = lookup(&roots, &ids(&format!("/kubepods/besteffort/pod{UID}/{c_id}")));
    assert_eq!(i.runtime, Some(Runtime::Containerd), "found by its data");
    assert_eq!((i.name.as_deref(), i.image.as_deref()), (Some("agent"), Some("docker.io/library/python:3.12")));
    let pod = i.pod.clone().unwrap();
    assert_eq!((pod.uid.as_str(), pod.name.as_deref(), pod.namespace.as_deref()), (UID, Some("coder-7d9f"), Some("agents")));
    let o = i.ocsf();
    assert_eq!(o, json!({ "uid": c_id, "name": "agent", "runtime": "containerd", "image": { "name": "docker.io/library/python", "tag": "3.12" }, "orchestrator": "Kubernetes", "pod_uuid": UID }));
    // CRI-O: labels in an annotation; the pod's labels from its sandbox.
    let (s_id, x_id) = (ID.replace('f', "0"), ID.replace('a', "b"));
    let labels = |extra: serde_json::Value| {
        let mut l = json!({ "io.kubernetes.pod.name": "web-0", "io.kubernetes.pod.namespace": "prod", "io.kubernetes.pod.uid": UID });
        l.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        l.to_string()
    };
    write(&roots.crio.join(format!("overlay-containers/{s_id}/userdata/config.json")), json!({ "annotations": { "io.kubernetes.cri-o.Labels": labels(json!({ "app": "web" })) } }));
    write(&roots.crio.join(format!("overlay-containers/{x_id}/userdata/config.json")), json!({ "annotations": {
        "io.kubernetes.cri-o.Labels": labels(json!({ "io.kubernetes.container.name": "nginx" })),
        "io.kubernetes.cri-o.ImageName": "nginx:1.27",
        "io.kubernetes.cri-o.SandboxID": s_id,
    } }));
    let i = lookup(&roots, &ids(&format!("/kubepods.slice/kubepods-pod{}.slice/crio-{x_id}.scope", UID.replace('-', "_"))));
    assert_eq!((i.name.as_deref(), i.image.as_deref()), (Some("nginx"), Some("nginx:1.27")));
    assert_eq!(i.pod.unwrap().labels, BTreeMap::from([("app".to_owned(), "web".to_owned())]));
    // A cgroupfs pod with no runtime data: its name from the kubelet's log directory.
    fs::create_dir_all(roots.pod_logs.join(format!("agents_coder-7d9f_{UID}"))).unwrap();
    let i = lookup(&roots, &ids(&format!("/kubepods/pod{UID}/{}", ID.replace('e', "d"))));
    assert!(!i.has_metadata());
    assert_eq!(i.pod.unwrap().name.as_deref(), Some("coder-7d9f"));
    // Malformed data is left out, never fatal.
    fs::write(roots.docker.join(format!("containers/{ID}/config.v2.json")), b"{not json").unwrap();
    assert!(!lookup(&roots, &ids(&format!("/docker/{ID}"))).has_metadata());
    fs::remove_dir_all(&dir).unwrap();
}

fn policy(matcher: &str) -> Result<crate::policy::compile::Compiled, String> {
    let text = format!("agents:\n  - name: a\n    match:\n{matcher}");
    let p = crate::policy::parse::parse("p.yaml", &text).map_err(|e| e.to_string())?;
    crate::policy::compile::compile(&p, 0).map_err(|e| e.to_string())
}

#[test]
fn match_container_and_pod() {
    let c = policy("      container:\n        runtime: docker\n        image: \"ghcr.io/acme/*\"\n        labels: { team: m* }\n      pod: { namespace: agents, labels: { app: coder } }\n").unwrap();
    let a = &c.agents[0];
    assert_eq!(a.containers.len(), 2);
    assert_eq!(a.containers[0].text, "container: {runtime: docker, image: \"ghcr.io/acme/*\", labels: {team: \"m*\"}}");
    let docker = ids(&format!("/system.slice/docker-{ID}.scope"));
    let mut info = Info { id: Some(ID.into()), runtime: Some(Runtime::Docker), image: Some("ghcr.io/acme/agent:1".into()), labels: BTreeMap::from([("team".into(), "ml".into())]), source: Some("x".into()), ..Default::default() };
    assert!(a.containers[0].matches(&docker, &info));
    assert_eq!(c.agent_for_cgroup("system.slice/docker-x.scope", Some((&docker, &info))), Some(1));
    info.labels.clear();
    assert!(!a.containers[0].matches(&docker, &info), "a label condition needs the label");
    let below = ids(&format!("/system.slice/docker-{ID}.scope/init.scope"));
    info.labels.insert("team".into(), "ml".into());
    assert!(!a.containers[0].matches(&below, &info), "only the container's own cgroup is registered");
    // The pod item: any runtime, the pod's namespace and labels.
    info.pod = Some(Pod { uid: UID.into(), name: Some("coder-1".into()), namespace: Some("agents".into()), labels: BTreeMap::from([("app".into(), "coder".into())]) });
    assert!(a.containers[1].matches(&docker, &info));
    info.pod.as_mut().unwrap().namespace = Some("default".into());
    assert!(!a.containers[1].matches(&docker, &info));
    // Warnings and errors, with positions.
    let c = policy("      pod: { labels: { app: x } }\n").unwrap();
    assert_eq!(c.warnings.len(), 1);
    assert!(c.warnings[0].starts_with("p.yaml:4:12: warning: `pod: {labels: {app: x}}`: pod labels are known for Docker"), "{:?}", c.warnings);
    for (m, want) in [
        ("      container: { runtime: podman }\n", "p.yaml:4:29: unknown runtime `podman`; valid: docker, containerd, crio"),
        ("      container: {}\n", "p.yaml:4:18: `container` is empty"),
        ("      container: { imag: x }\n", "p.yaml:4:20: unknown key `imag` in `container` (did you mean `image`?)"),
        ("      pod: { labels: [a] }\n", "p.yaml:4:22: `labels` must be a mapping of label to glob"),
        ("      container: { runtime: containerd, pod: { labels: { a: b } } }\n", "p.yaml:4:18: `container: {runtime: containerd, pod: {labels: {a: b}}}` can never match"),
        ("      container: []\n", "p.yaml:4:18: `container` is an empty list"),
        ("      container: { name: \"[\" }\n", "p.yaml:4:26: `name: [`:"),
    ] {
        let e = policy(m).unwrap_err();
        assert!(e.starts_with(want), "{m}: {e}");
    }
}

#[test]
fn verdicts_carry_the_container_in_ocsf_and_ecs() {
    let info = Info {
        id: Some(ID.into()),
        runtime: Some(Runtime::Containerd),
        name: Some("agent".into()),
        image: Some("ghcr.io/acme/agent@sha256:00".into()),
        image_id: None,
        labels: BTreeMap::new(),
        pod: Some(Pod { uid: UID.into(), name: Some("coder-1".into()), namespace: Some("agents".into()), labels: BTreeMap::from([("app".into(), "coder".into())]) }),
        source: Some("/run/containerd/…/config.json".into()),
    };
    let mut v = json!({ "class_uid": 2004, "metadata": { "profiles": ["host"] }, "unmapped": {}, "evidences": [{ "process": {} }] });
    annotate(&mut v, &info);
    assert_eq!(v["container"]["image"], json!({ "name": "ghcr.io/acme/agent@sha256:00" }));
    assert_eq!(v["evidences"][0]["container"]["uid"], ID);
    assert_eq!(v["metadata"]["profiles"], json!(["host", "container"]));
    assert_eq!(v["unmapped"]["container"]["pod"]["namespace"], "agents");
    let e = crate::ecs::project(&v);
    assert_eq!(e["container"]["id"], ID);
    assert_eq!(e["container"]["runtime"], "containerd");
    assert_eq!(e["orchestrator"], json!({ "type": "kubernetes", "namespace": "agents", "resource": { "type": "pod", "name": "coder-1", "id": UID, "label": ["app:coder"] } }));
}

#[test]
fn the_deployed_settings_parse_and_containers_settings_are_checked() {
    // deploy/kubernetes and the Helm chart ship this settings file (their equality is checked
    // by `cargo xtask test`).
    let c = crate::config::parse("guard.yaml", include_str!("../../../deploy/helm/guard/files/guard.yaml")).unwrap();
    assert_eq!(c.containers, Some(Roots::default()));
    let c = crate::config::parse("g.yaml", "containers:\n  docker_root: /srv/docker\n").unwrap();
    assert_eq!(c.containers.unwrap().docker, Path::new("/srv/docker"));
    let e = crate::config::parse("g.yaml", "containers:\n  docker_root: srv\n").unwrap_err().to_string();
    assert_eq!(e, "g.yaml:2:16: `docker_root` must be an absolute path, not `srv`");
    let e = crate::config::parse("g.yaml", "containers:\n  cri_root: /x\n").unwrap_err().to_string();
    assert!(e.starts_with("g.yaml:2:3: unknown key `cri_root` in `containers` (did you mean `crio_root`?)"), "{e}");
}
