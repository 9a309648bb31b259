//! Container workloads as agents (`match.container`, `match.pod`): cgroups made exactly as
//! Docker, containerd (CRI) and CRI-O name them under the systemd and cgroupfs drivers, with the
//! runtimes' on-disk data faked in a temp dir (no runtime daemon), a real process in each, the
//! kernel's answer (SIGKILL at exec, EPERM at connect) and the identity in the verdicts.
use std::{
    io::Write as _,
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use guard_tests::{Daemon, TempDir, field, run_in_cgroup, unique};
use serde_json::{Value, json};

const MARKER: &str = env!("CARGO_BIN_EXE_guard-test-marker");
const NET: &str = env!("CARGO_BIN_EXE_guard-test-connect");
/// A port nothing listens on: the connect is refused by the policy before any packet.
const DENIED_PORT: &str = "47911";

/// A container id (64 hex digits) and a pod uid unique to this run.
fn container_id(tag: &str) -> String {
    let seed = format!("{}{tag}{:?}", std::process::id(), Instant::now());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut out = String::new();
    while out.len() < 64 {
        for b in seed.bytes().chain(out.clone().into_bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
    }
    out.truncate(64);
    out
}

fn pod_uid(tag: &str) -> String {
    let h = container_id(tag);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Cgroups made by the test, removed (innermost first) when dropped, also on a failed assert.
struct Cgroups(Vec<PathBuf>);

impl Cgroups {
    /// Makes `rel` (and missing parents) under the cgroup v2 root; returns its directory.
    fn make(&mut self, rel: &str) -> PathBuf {
        let mut dir = guard_tests::cgroup2_root();
        for part in rel.split('/') {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                self.0.push(dir.clone());
            }
        }
        dir
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn write_json(path: &Path, v: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, v.to_string()).unwrap();
}

fn install_marker(dir: &TempDir, rel: &str) -> String {
    let dst = dir.path(rel);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(MARKER, &dst).unwrap();
    dst.to_str().unwrap().to_owned()
}

/// Runs `bin` in cgroup `dir`: was it killed before its first instruction (no marker)?
fn killed_in(dir: &Path, bin: &str, marker: &Path) -> bool {
    let mut cmd = Command::new(bin);
    cmd.env("GUARD_MARKER", marker);
    let out = run_in_cgroup(dir, cmd);
    let killed = out.status.signal() == Some(libc::SIGKILL) && !marker.exists();
    assert!(killed || out.status.success(), "{bin} in {}: {:?}", dir.display(), out.status);
    killed
}

/// A connect to 127.0.0.1:DENIED_PORT from cgroup `dir`: the errno it failed with, if any.
fn connect_errno(dir: &Path) -> Option<i32> {
    let mut cmd = Command::new(NET);
    cmd.args(["127.0.0.1", DENIED_PORT]);
    let out = run_in_cgroup(dir, cmd);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    stdout.lines().find_map(|l| l.strip_prefix("errno ")).and_then(|e| e.parse().ok())
}

/// A settings file pointing the runtimes' data roots at `dir`.
fn settings(dir: &TempDir) -> String {
    let path = dir.path("guard.yaml");
    let d = dir.0.display();
    std::fs::write(&path, format!(
        "containers:\n  docker_root: {d}/docker\n  containerd_state: {d}/containerd\n  crio_root: {d}/crio\n  pod_logs: {d}/pods\n"
    )).unwrap();
    path.to_str().unwrap().to_owned()
}

fn wait_registered(daemon: &Daemon, cgroup: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !daemon.stderr_text().contains(cgroup) {
        assert!(Instant::now() < deadline, "{cgroup} was not registered: {}", daemon.stderr_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn killed_exec(v: &Value, path: &str) -> bool {
    v["class_uid"] == 1007 && field(v, "/process/file/path") == path && field(v, "/unmapped/verdict") == "killed"
}

fn refused_connect(v: &Value, cgroup: &str) -> bool {
    v["class_uid"] == 4001 && field(v, "/unmapped/verdict") == "denied" && field(v, "/unmapped/cgroup/path") == cgroup
}

/// The Detection Finding linked to verdict `v` (written right after it).
fn await_finding(daemon: &Daemon, v: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(f) = daemon.findings(|f| f["unmapped"]["activity_sequence"] == v["metadata"]["sequence"]).into_iter().next() {
            return f;
        }
        assert!(Instant::now() < deadline, "no finding for {v:#}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `guard-agent verdicts ecs` on one verdict.
fn ecs(v: &Value) -> Value {
    let mut child = Command::new(guard_tests::agent_bin())
        .args(["verdicts", "ecs"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("guard-agent verdicts ecs");
    child.stdin.take().unwrap().write_all(format!("{v}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("ECS output: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn docker_containers_under_systemd_and_cgroupfs_drivers_are_agents_with_identity() {
    let dir = TempDir::new("docker");
    let agent = unique("docker");
    let denied = install_marker(&dir, "bin/guard-denied");
    let (running, fresh, other) = (container_id("running"), container_id("fresh"), container_id("other"));
    let config = |id: &str, name: &str, image: &str| json!({
        "ID": id, "Name": format!("/{name}"), "Image": "sha256:5d1f00",
        "Config": { "Image": image, "Labels": { "team": "ml", "com.docker.compose.service": name } },
    });
    let docker = |id: &str| dir.path(&format!("docker/containers/{id}/config.v2.json"));
    write_json(&docker(&running), &config(&running, "coder", "ghcr.io/acme/agent:1.4"));
    write_json(&docker(&fresh), &config(&fresh, "coder-2", "ghcr.io/acme/agent:1.5"));
    write_json(&docker(&other), &config(&other, "db", "postgres:16"));
    let mut cgroups = Cgroups(Vec::new());
    // Running before the daemon starts (systemd driver): registered at load.
    let systemd_rel = format!("system.slice/docker-{running}.scope");
    let systemd_dir = cgroups.make(&systemd_rel);
    let policy = format!(
        "agents:\n  - name: {agent}\n    match:\n      container:\n        runtime: docker\n        image: \"ghcr.io/acme/agent:*\"\n        labels: {{ team: ml }}\n    exec:\n      deny:\n        - basename: guard-denied\n    network:\n      deny:\n        - cidr: 127.0.0.1/32\n          ports: [{DENIED_PORT}]\n"
    );
    let daemon = Daemon::start_with(&dir, &policy, &["--detach-on-exit", "--config", &settings(&dir)]);
    assert!(killed_in(&systemd_dir, &denied, &dir.path("m1")), "a running Docker container (systemd driver) is not enforced");
    assert_eq!(connect_errno(&systemd_dir), Some(libc::EPERM), "the denied connect from the container");
    let v = daemon.await_verdict("the container's kill", 10, |v| killed_exec(v, &denied));
    assert_eq!(field(&v, "/unmapped/agent"), agent);
    assert_eq!(field(&v, "/container/uid"), running);
    assert_eq!(field(&v, "/container/name"), "coder");
    assert_eq!(field(&v, "/container/runtime"), "docker");
    assert_eq!(field(&v, "/container/image/name"), "ghcr.io/acme/agent");
    assert_eq!(field(&v, "/container/image/tag"), "1.4");
    assert_eq!(field(&v, "/container/image/uid"), "sha256:5d1f00");
    assert_eq!(field(&v, "/unmapped/container/labels/team"), "ml");
    assert!(v["metadata"]["profiles"].as_array().unwrap().iter().any(|p| p == "container"), "{v:#}");
    let finding = await_finding(&daemon, &v);
    assert_eq!(field(&finding, "/container/uid"), running);
    assert_eq!(field(&finding, "/evidences/0/container/uid"), running);
    let e = ecs(&v);
    assert_eq!(field(&e, "/container/id"), running);
    assert_eq!(field(&e, "/container/image/name"), "ghcr.io/acme/agent");
    assert_eq!(field(&e, "/container/labels/team"), "ml");
    let c = daemon.await_verdict("the refused connect", 10, |v| refused_connect(v, &format!("/{systemd_rel}")));
    assert_eq!(field(&c, "/container/uid"), running);

    // Started after the daemon (cgroupfs driver): registered when its cgroup appears.
    let cgroupfs_rel = format!("docker/{fresh}");
    let cgroupfs_dir = cgroups.make(&cgroupfs_rel);
    wait_registered(&daemon, &cgroupfs_rel);
    assert!(killed_in(&cgroupfs_dir, &denied, &dir.path("m2")), "a new Docker container (cgroupfs driver) is not enforced");
    assert_eq!(connect_errno(&cgroupfs_dir), Some(libc::EPERM));
    let v = daemon.await_verdict("the second container's kill", 10, |v| killed_exec(v, &denied) && field(v, "/container/uid") == fresh);
    assert_eq!(field(&v, "/container/name"), "coder-2");
    assert_eq!(field(&v, "/unmapped/cgroup/path"), format!("/{cgroupfs_rel}"));

    // A container the match does not name (another image) runs unpoliced.
    let other_rel = format!("system.slice/docker-{other}.scope");
    let other_dir = cgroups.make(&other_rel);
    // Cgroup events are handled in order: once one made after it is registered, it was seen.
    let later = container_id("later");
    write_json(&docker(&later), &config(&later, "coder-3", "ghcr.io/acme/agent:2"));
    let later_rel = format!("system.slice/docker-{later}.scope");
    cgroups.make(&later_rel);
    wait_registered(&daemon, &later_rel);
    assert!(!daemon.stderr_text().contains(&other), "{}", daemon.stderr_text());
    assert!(!killed_in(&other_dir, &denied, &dir.path("m3")), "a container of another image is enforced");
    assert_eq!(connect_errno(&other_dir), Some(libc::ECONNREFUSED), "the other container's connect reaches the (closed) port");
    drop(cgroups);
    daemon.stop();
}

#[test]
fn kubernetes_pods_under_containerd_and_crio_are_agents_with_pod_identity() {
    let dir = TempDir::new("pods");
    let agent = unique("pods");
    let denied = install_marker(&dir, "bin/guard-denied");
    let policy = format!(
        "agents:\n  - name: {agent}\n    match:\n      pod: {{ namespace: agents, name: \"coder-*\" }}\n    exec:\n      deny:\n        - basename: guard-denied\n    network:\n      deny:\n        - cidr: 127.0.0.1/32\n          ports: [{DENIED_PORT}]\n"
    );
    let daemon = Daemon::start_with(&dir, &policy, &["--detach-on-exit", "--config", &settings(&dir)]);
    let mut cgroups = Cgroups(Vec::new());

    // containerd, systemd driver: the OCI bundle's CRI annotations name the pod.
    let (id, uid) = (container_id("cd"), pod_uid("cd"));
    write_json(&dir.path(&format!("containerd/io.containerd.runtime.v2.task/k8s.io/{id}/config.json")), &json!({
        "ociVersion": "1.1.0",
        "annotations": {
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": "agent",
            "io.kubernetes.cri.image-name": "ghcr.io/acme/agent:1.4",
            "io.kubernetes.cri.sandbox-name": "coder-7d9f",
            "io.kubernetes.cri.sandbox-namespace": "agents",
            "io.kubernetes.cri.sandbox-uid": uid,
        },
    }));
    let pod_slice = format!("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice", uid.replace('-', "_"));
    let rel = format!("{pod_slice}/cri-containerd-{id}.scope");
    let cdir = cgroups.make(&rel);
    wait_registered(&daemon, &rel);
    assert!(killed_in(&cdir, &denied, &dir.path("m1")), "a containerd pod container is not enforced");
    assert_eq!(connect_errno(&cdir), Some(libc::EPERM));
    let v = daemon.await_verdict("the pod container's kill", 10, |v| killed_exec(v, &denied) && field(v, "/container/uid") == id);
    assert_eq!(field(&v, "/unmapped/agent"), agent);
    assert_eq!(field(&v, "/container/runtime"), "containerd");
    assert_eq!(field(&v, "/container/name"), "agent");
    assert_eq!(field(&v, "/container/image/name"), "ghcr.io/acme/agent");
    assert_eq!(field(&v, "/container/orchestrator"), "Kubernetes");
    assert_eq!(field(&v, "/container/pod_uuid"), uid);
    assert_eq!(field(&v, "/unmapped/container/pod/name"), "coder-7d9f");
    assert_eq!(field(&v, "/unmapped/container/pod/namespace"), "agents");
    let e = ecs(&v);
    assert_eq!(field(&e, "/orchestrator/type"), "kubernetes");
    assert_eq!(field(&e, "/orchestrator/namespace"), "agents");
    assert_eq!(field(&e, "/orchestrator/resource/type"), "pod");
    assert_eq!(field(&e, "/orchestrator/resource/name"), "coder-7d9f");
    daemon.await_verdict("the pod container's refused connect", 10, |v| refused_connect(v, &format!("/{rel}")) && field(v, "/container/uid") == id);

    // CRI-O, cgroupfs driver: a container id below `kubepods/<qos>/pod<uid>`; the runtime is
    // found by its data, the pod's labels by its sandbox's.
    let (sandbox, cid, uid2) = (container_id("sandbox"), container_id("crio"), pod_uid("crio"));
    let labels = |extra: Value| {
        let mut l = json!({ "io.kubernetes.pod.name": "coder-x1", "io.kubernetes.pod.namespace": "agents", "io.kubernetes.pod.uid": uid2 });
        l.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        l.to_string()
    };
    let userdata = |id: &str| dir.path(&format!("crio/overlay-containers/{id}/userdata/config.json"));
    write_json(&userdata(&sandbox), &json!({ "annotations": { "io.kubernetes.cri-o.Labels": labels(json!({ "app": "coder", "tier": "agents" })) } }));
    write_json(&userdata(&cid), &json!({ "annotations": {
        "io.kubernetes.cri-o.Labels": labels(json!({ "io.kubernetes.container.name": "shell" })),
        "io.kubernetes.cri-o.ImageName": "docker.io/library/python:3.12",
        "io.kubernetes.cri-o.SandboxID": sandbox,
    } }));
    let rel2 = format!("kubepods/besteffort/pod{uid2}/{cid}");
    let cdir2 = cgroups.make(&rel2);
    wait_registered(&daemon, &rel2);
    assert!(killed_in(&cdir2, &denied, &dir.path("m2")), "a CRI-O pod container (cgroupfs) is not enforced");
    let v = daemon.await_verdict("the CRI-O container's kill", 10, |v| killed_exec(v, &denied) && field(v, "/container/uid") == cid);
    assert_eq!(field(&v, "/container/runtime"), "crio");
    assert_eq!(field(&v, "/container/name"), "shell");
    assert_eq!(field(&v, "/unmapped/container/pod/name"), "coder-x1");
    assert_eq!(field(&v, "/unmapped/container/pod/labels/app"), "coder");
    assert_eq!(field(&v, "/unmapped/container/pod/labels/tier"), "agents");
    let e = ecs(&v);
    assert_eq!(field(&e, "/orchestrator/resource/label"), json!(["app:coder", "tier:agents"]).to_string());

    // A pod of another namespace: not an agent.
    let (oid, ouid) = (container_id("other"), pod_uid("other"));
    write_json(&dir.path(&format!("containerd/io.containerd.runtime.v2.task/k8s.io/{oid}/config.json")), &json!({
        "annotations": { "io.kubernetes.cri.sandbox-name": "coder-1", "io.kubernetes.cri.sandbox-namespace": "default", "io.kubernetes.cri.sandbox-uid": ouid },
    }));
    let orel = format!("kubepods.slice/kubepods-pod{}.slice/cri-containerd-{oid}.scope", ouid.replace('-', "_"));
    let odir = cgroups.make(&orel);
    // Seen once a later matching one is registered (cgroup events are handled in order).
    let (lid, luid) = (container_id("later"), pod_uid("later"));
    write_json(&dir.path(&format!("containerd/io.containerd.runtime.v2.task/k8s.io/{lid}/config.json")), &json!({
        "annotations": { "io.kubernetes.cri.sandbox-name": "coder-2", "io.kubernetes.cri.sandbox-namespace": "agents", "io.kubernetes.cri.sandbox-uid": luid },
    }));
    let lrel = format!("kubepods.slice/kubepods-pod{}.slice/cri-containerd-{lid}.scope", luid.replace('-', "_"));
    cgroups.make(&lrel);
    wait_registered(&daemon, &lrel);
    assert!(!daemon.stderr_text().contains(&oid), "{}", daemon.stderr_text());
    assert!(!killed_in(&odir, &denied, &dir.path("m3")), "a pod of another namespace is enforced");
    drop(cgroups);
    daemon.stop();
}

#[test]
fn a_container_whose_runtime_data_comes_late_is_registered_when_it_appears() {
    let dir = TempDir::new("late");
    let agent = unique("late");
    let denied = install_marker(&dir, "bin/guard-denied");
    let policy = format!("agents:\n  - name: {agent}\n    match:\n      container: {{ image: \"ghcr.io/acme/*\" }}\n    exec:\n      deny:\n        - basename: guard-denied\n");
    let daemon = Daemon::start_with(&dir, &policy, &["--detach-on-exit", "--config", &settings(&dir)]);
    let mut cgroups = Cgroups(Vec::new());
    let id = container_id("late");
    let rel = format!("system.slice/cri-containerd-{id}.scope");
    let cdir = cgroups.make(&rel);
    // The cgroup exists before the bundle is written (a runtime slower than usual).
    std::thread::sleep(Duration::from_millis(300));
    assert!(!daemon.stderr_text().contains(&rel));
    write_json(&dir.path(&format!("containerd/io.containerd.runtime.v2.task/default/{id}/config.json")), &json!({
        "annotations": { "nerdctl/name": "late-one", "io.kubernetes.cri.image-name": "ghcr.io/acme/agent:9" },
    }));
    wait_registered(&daemon, &rel);
    assert!(killed_in(&cdir, &denied, &dir.path("m")), "the late container is not enforced");
    let v = daemon.await_verdict("the late container's kill", 10, |v| killed_exec(v, &denied));
    assert_eq!(field(&v, "/container/name"), "late-one");
    drop(cgroups);
    daemon.stop();
}
