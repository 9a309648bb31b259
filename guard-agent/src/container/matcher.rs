//! `match: container` and `match: pod`: which containers an agent's policy covers.
//!
//! ```yaml
//! match:
//!   container:                 # a map, or a list of them (any one matching suffices)
//!     runtime: docker          # docker | containerd | crio
//!     id: "3f2a*"              # globs: id, name, image; labels: key -> glob, all must hold
//!     image: "ghcr.io/acme/agent:*"
//!     labels: { team: ml }
//!     pod: { namespace: agents }   # and it belongs to such a pod
//!   pod:                       # every container of a pod: namespace, name, uid, labels
//!     namespace: agents
//!     labels: { app: coder }
//! ```
//!
//! The container's cgroup (`docker-<id>.scope`, `cri-containerd-<id>.scope`, …) is registered
//! for the agent when it appears (and at policy load for running ones), so it and everything
//! below it is under the policy, decided in the kernel like any agent cgroup.
use std::collections::BTreeMap;

use globset::GlobMatcher;

use super::{CgroupIds, Info, Runtime};
use crate::policy::{
    PolicyError, Pos,
    compile::glob,
    parse::Parser,
    yaml::{Node, Value},
};

const CONTAINER_KEYS: &[&str] = &["runtime", "id", "name", "image", "labels", "pod"];
const POD_KEYS: &[&str] = &["namespace", "name", "uid", "labels"];

/// A glob as written and compiled.
#[derive(Debug, Clone)]
pub struct Pattern {
    matcher: GlobMatcher,
}

impl Pattern {
    fn is_match(&self, value: Option<&str>) -> bool {
        value.is_some_and(|v| self.matcher.is_match(v))
    }
}

#[derive(Debug, Clone, Default)]
pub struct PodMatch {
    pub namespace: Option<Pattern>,
    pub name: Option<Pattern>,
    pub uid: Option<Pattern>,
    pub labels: Vec<(String, Pattern)>,
}

/// One `container` (or `pod`) item: every condition given must hold.
#[derive(Debug, Clone)]
pub struct ContainerMatch {
    pub runtime: Option<Runtime>,
    pub id: Option<Pattern>,
    pub name: Option<Pattern>,
    pub image: Option<Pattern>,
    pub labels: Vec<(String, Pattern)>,
    pub pod: Option<PodMatch>,
    /// As shown by `status` and `policy check`: `container: {runtime: docker, image: …}`.
    pub text: String,
    pub pos: Pos,
}

fn labels_match(want: &[(String, Pattern)], have: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, p)| p.is_match(have.get(k).map(String::as_str)))
}

impl ContainerMatch {
    /// Does the container of cgroup `ids`, as `info` describes it, match?
    pub fn matches(&self, ids: &CgroupIds, info: &Info) -> bool {
        if !ids.leaf_is_container || ids.id.is_none() {
            return false;
        }
        let runtime = info.runtime.or(ids.runtime);
        if self.runtime.is_some_and(|r| runtime != Some(r)) {
            return false;
        }
        if let Some(p) = &self.id
            && !p.is_match(ids.id.as_deref())
        {
            return false;
        }
        if !(self.name.as_ref().is_none_or(|p| p.is_match(info.name.as_deref()))
            && self.image.as_ref().is_none_or(|p| p.is_match(info.image.as_deref()))
            && labels_match(&self.labels, &info.labels))
        {
            return false;
        }
        match (&self.pod, &info.pod) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(w), Some(pod)) => {
                w.namespace.as_ref().is_none_or(|p| p.is_match(pod.namespace.as_deref()))
                    && w.name.as_ref().is_none_or(|p| p.is_match(pod.name.as_deref()))
                    && w.uid.as_ref().is_none_or(|p| p.is_match(Some(&pod.uid)))
                    && labels_match(&w.labels, &pod.labels)
            }
        }
    }
}

impl crate::policy::compile::Compiled {
    /// The policy id of the first agent (in policy order) whose glob matches cgroup `rel`
    /// (relative, no leading `/`), or whose container match matches the container it is.
    pub fn agent_for_cgroup(&self, rel: &str, container: Option<(&CgroupIds, &Info)>) -> Option<u32> {
        self.agents
            .iter()
            .find(|a| {
                a.cgroup_globs.iter().any(|(_, g)| g.is_match(rel))
                    || container.is_some_and(|(ids, info)| a.containers.iter().any(|m| m.matches(ids, info)))
            })
            .map(|a| a.policy_id)
    }

    /// Does some agent match containers?
    pub fn matches_containers(&self) -> bool {
        self.agents.iter().any(|a| !a.containers.is_empty())
    }
}

/// What `policy check` says about a match that can match less than it seems to: an error for
/// one that can never match, warnings otherwise.
pub(crate) fn lint(m: &ContainerMatch, file: &str, warnings: &mut Vec<String>) -> Result<(), PolicyError> {
    let pod_labels = m.pod.as_ref().is_some_and(|p| !p.labels.is_empty());
    if pod_labels && m.runtime == Some(Runtime::Containerd) {
        return Err(PolicyError { file: file.to_owned(), pos: m.pos, message: format!(
            "`{}` can never match: containerd keeps a pod's labels only in its own database, which guard does not read; match containerd pods by namespace, name or uid", m.text
        ) });
    }
    if pod_labels && m.runtime.is_none() {
        warnings.push(crate::policy::lint::warning(file, m.pos, format!(
            "`{}`: pod labels are known for Docker (cri-dockerd) and CRI-O pods only; containerd keeps them in its own database, so its pods never match this", m.text
        )));
    }
    Ok(())
}

/// The items of `match.container` (`pod: false`) or `match.pod` (`pod: true`).
pub(crate) fn parse(p: &Parser<'_>, node: &Node, pod: bool) -> Result<Vec<ContainerMatch>, PolicyError> {
    let items: Vec<&Node> = match &node.value {
        Value::Seq(items) => items.iter().collect(),
        _ => vec![node],
    };
    let key = if pod { "pod" } else { "container" };
    if items.is_empty() {
        return Err(p.err(node.pos, format!("`{key}` is an empty list: the agent would match nothing")));
    }
    items
        .into_iter()
        .map(|item| {
            let text = format!("{key}: {}", flow(item));
            if pod {
                let pm = pod_match(p, item)?;
                Ok(ContainerMatch { runtime: None, id: None, name: None, image: None, labels: Vec::new(), pod: Some(pm), text, pos: item.pos })
            } else {
                container(p, item, text)
            }
        })
        .collect()
}

fn container(p: &Parser<'_>, node: &Node, text: String) -> Result<ContainerMatch, PolicyError> {
    let m = p.map(node, "`container`", CONTAINER_KEYS)?;
    if CONTAINER_KEYS.iter().all(|k| m.get(k).is_none()) {
        return Err(p.err(node.pos, format!("`container` is empty: give one of {} (`id: \"*\"` matches every container)", CONTAINER_KEYS.join(", "))));
    }
    let runtime = match m.get("runtime") {
        Some(n) => {
            let s = p.str(n, "`runtime`")?;
            Some(Runtime::parse(s).ok_or_else(|| p.err(n.pos, format!("unknown runtime `{s}`; valid: {}", Runtime::NAMES.join(", "))))?)
        }
        None => None,
    };
    Ok(ContainerMatch {
        runtime,
        id: pattern(p, m.get("id"), "id")?,
        name: pattern(p, m.get("name"), "name")?,
        image: pattern(p, m.get("image"), "image")?,
        labels: labels(p, m.get("labels"))?,
        pod: m.get("pod").map(|n| pod_match(p, n)).transpose()?,
        text,
        pos: node.pos,
    })
}

fn pod_match(p: &Parser<'_>, node: &Node) -> Result<PodMatch, PolicyError> {
    let m = p.map(node, "`pod`", POD_KEYS)?;
    if POD_KEYS.iter().all(|k| m.get(k).is_none()) {
        return Err(p.err(node.pos, format!("`pod` is empty: give one of {} (`namespace: \"*\"` matches every pod)", POD_KEYS.join(", "))));
    }
    Ok(PodMatch {
        namespace: pattern(p, m.get("namespace"), "namespace")?,
        name: pattern(p, m.get("name"), "name")?,
        uid: pattern(p, m.get("uid"), "uid")?,
        labels: labels(p, m.get("labels"))?,
    })
}

fn pattern(p: &Parser<'_>, node: Option<&Node>, key: &str) -> Result<Option<Pattern>, PolicyError> {
    let Some(node) = node else { return Ok(None) };
    let text = p.nonempty_str(node, &format!("`{key}`"))?;
    let matcher = glob(text, false).map_err(|e| p.err(node.pos, format!("`{key}: {text}`: {e}")))?;
    Ok(Some(Pattern { matcher }))
}

fn labels(p: &Parser<'_>, node: Option<&Node>) -> Result<Vec<(String, Pattern)>, PolicyError> {
    let Some(node) = node else { return Ok(Vec::new()) };
    let Value::Map(entries) = &node.value else {
        return Err(p.err(node.pos, format!("`labels` must be a mapping of label to glob, found {}", node.kind())));
    };
    if entries.is_empty() {
        return Err(p.err(node.pos, "`labels` is empty"));
    }
    let mut out: Vec<(String, Pattern)> = Vec::new();
    for (k, v) in entries {
        let key = p.nonempty_str(k, "a label key")?.to_owned();
        if out.iter().any(|(seen, _)| *seen == key) {
            return Err(p.err(k.pos, format!("label `{key}` appears twice")));
        }
        let pat = pattern(p, Some(v), &format!("labels.{key}"))?.expect("given");
        out.push((key, pat));
    }
    Ok(out)
}

/// A node in YAML flow style, for messages.
fn flow(node: &Node) -> String {
    match &node.value {
        Value::Scalar { text } => {
            if text.is_empty() || text.contains([':', ',', '{', '}', '[', ']', '*', '#', ' ']) {
                format!("{text:?}")
            } else {
                text.clone()
            }
        }
        Value::Seq(items) => format!("[{}]", items.iter().map(flow).collect::<Vec<_>>().join(", ")),
        Value::Map(entries) => format!("{{{}}}", entries.iter().map(|(k, v)| format!("{}: {}", flow(k), flow(v))).collect::<Vec<_>>().join(", ")),
    }
}
