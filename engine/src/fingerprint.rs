//! Fingerprints: named components, each a blake3 hash with a small preimage kept beside it;
//! the node key is blake3 over the sorted (name, hash) pairs.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A node's cache key (blake3, hex).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeKey(pub String);

impl fmt::Display for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl NodeKey {
    /// The first 12 hex digits, for display.
    pub fn short(&self) -> &str {
        self.0.get(..12).unwrap_or(&self.0)
    }
}

/// What a component's hash was computed from, kept small enough to store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Preimage {
    /// A scalar or JSON value, verbatim (params, arguments, config).
    Value(Value),
    /// A file manifest: relative path -> content hash (datasets, source folders, outputs).
    Manifest(BTreeMap<String, String>),
}

/// One named part of a fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Component {
    /// blake3 (hex) of the component.
    pub hash: String,
    /// What it was computed from.
    pub preimage: Preimage,
}

impl Component {
    /// A component over a JSON value (hashed in canonical form: sorted keys, no spaces).
    pub fn value(v: Value) -> Component {
        let canon = canonical_json(&v);
        Component {
            hash: blake3::hash(canon.as_bytes()).to_hex().to_string(),
            preimage: Preimage::Value(v),
        }
    }

    /// A component over a file manifest (Merkle hash of sorted (path, hash)).
    pub fn manifest(files: BTreeMap<String, String>) -> Component {
        Component {
            hash: merkle_hash(files.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            preimage: Preimage::Manifest(files),
        }
    }
}

/// A fingerprint: component name -> component.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The components, sorted by name.
    pub components: BTreeMap<String, Component>,
}

impl Fingerprint {
    /// Add or replace a component.
    pub fn insert(&mut self, name: impl Into<String>, c: Component) {
        self.components.insert(name.into(), c);
    }

    /// The node key: blake3 over `name=hash` lines in name order.
    pub fn key(&self) -> NodeKey {
        let mut h = blake3::Hasher::new();
        h.update(b"stepgraph-fingerprint-v1\n");
        for (name, c) in &self.components {
            h.update(name.as_bytes());
            h.update(b"=");
            h.update(c.hash.as_bytes());
            h.update(b"\n");
        }
        NodeKey(h.finalize().to_hex().to_string())
    }
}

/// How one component differs between two fingerprints.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum ComponentChange {
    /// Present now, absent before.
    Added {
        /// Component name.
        component: String,
    },
    /// Present before, absent now.
    Removed {
        /// Component name.
        component: String,
    },
    /// A value changed: the leaf paths that differ with old and new values.
    Value {
        /// Component name.
        component: String,
        /// (path inside the value, old, new); path empty for a scalar.
        changes: Vec<(String, Value, Value)>,
    },
    /// A file set changed.
    Files {
        /// Component name.
        component: String,
        /// Files only in the new set.
        added: Vec<String>,
        /// Files only in the old set.
        removed: Vec<String>,
        /// Files whose content differs.
        changed: Vec<String>,
    },
}

impl fmt::Display for ComponentChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComponentChange::Added { component } => write!(f, "{component}: added"),
            ComponentChange::Removed { component } => write!(f, "{component}: removed"),
            ComponentChange::Value { component, changes } => {
                let parts: Vec<String> = changes
                    .iter()
                    .map(|(path, old, new)| {
                        let name = if path.is_empty() {
                            component.clone()
                        } else {
                            format!("{component}.{path}")
                        };
                        format!("{name}: {} -> {}", short_json(old), short_json(new))
                    })
                    .collect();
                f.write_str(&parts.join(", "))
            }
            ComponentChange::Files {
                component,
                added,
                removed,
                changed,
            } => {
                let mut parts = Vec::new();
                for (word, list) in [("changed", changed), ("added", added), ("removed", removed)] {
                    if !list.is_empty() {
                        parts.push(format!("{word} {}", list_some(list)));
                    }
                }
                if parts.is_empty() {
                    write!(f, "{component}: changed")
                } else {
                    write!(f, "{component}: {}", parts.join(", "))
                }
            }
        }
    }
}

fn list_some(list: &[String]) -> String {
    const MAX: usize = 5;
    if list.len() <= MAX {
        list.join(", ")
    } else {
        format!("{} and {} more", list[..MAX].join(", "), list.len() - MAX)
    }
}

fn short_json(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        format!("{}...", s.chars().take(77).collect::<String>())
    } else {
        s
    }
}

/// Compare two fingerprints component by component (the base of `explain`).
pub fn diff(old: &Fingerprint, new: &Fingerprint) -> Vec<ComponentChange> {
    let mut out = Vec::new();
    for (name, c) in &new.components {
        match old.components.get(name) {
            None => out.push(ComponentChange::Added {
                component: name.clone(),
            }),
            Some(o) if o.hash == c.hash => {}
            Some(o) => out.push(diff_component(name, &o.preimage, &c.preimage)),
        }
    }
    for name in old.components.keys() {
        if !new.components.contains_key(name) {
            out.push(ComponentChange::Removed {
                component: name.clone(),
            });
        }
    }
    out
}

fn diff_component(name: &str, old: &Preimage, new: &Preimage) -> ComponentChange {
    match (old, new) {
        (Preimage::Manifest(a), Preimage::Manifest(b)) => {
            let added = b.keys().filter(|k| !a.contains_key(*k)).cloned().collect();
            let removed = a.keys().filter(|k| !b.contains_key(*k)).cloned().collect();
            let changed = b
                .iter()
                .filter(|(k, v)| a.get(*k).is_some_and(|o| o != *v))
                .map(|(k, _)| k.clone())
                .collect();
            ComponentChange::Files {
                component: name.to_string(),
                added,
                removed,
                changed,
            }
        }
        (Preimage::Value(a), Preimage::Value(b)) => {
            let mut changes = Vec::new();
            diff_values("", a, b, &mut changes);
            ComponentChange::Value {
                component: name.to_string(),
                changes,
            }
        }
        (a, b) => ComponentChange::Value {
            component: name.to_string(),
            changes: vec![(String::new(), preimage_summary(a), preimage_summary(b))],
        },
    }
}

fn preimage_summary(p: &Preimage) -> Value {
    match p {
        Preimage::Value(v) => v.clone(),
        Preimage::Manifest(m) => Value::String(format!("{} files", m.len())),
    }
}

fn diff_values(path: &str, a: &Value, b: &Value, out: &mut Vec<(String, Value, Value)>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let (va, vb) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                diff_values(&p, va, vb, out);
            }
        }
        _ if a != b => out.push((path.to_string(), a.clone(), b.clone())),
        _ => {}
    }
}

/// Merkle hash of a manifest: blake3 over `path \0 hash \n` in the iterator's order
/// (callers pass sorted paths).
pub fn merkle_hash<'a>(files: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"stepgraph-manifest-v1\n");
    for (path, hash) in files {
        h.update(path.as_bytes());
        h.update(b"\0");
        h.update(hash.as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex().to_string()
}

/// JSON with object keys sorted at every level and no insignificant white space.
pub fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical_json(&m[k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical_json).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fp(pairs: &[(&str, Value)]) -> Fingerprint {
        let mut f = Fingerprint::default();
        for (k, v) in pairs {
            f.insert(*k, Component::value(v.clone()));
        }
        f
    }

    #[test]
    fn key_is_independent_of_insertion_and_map_order() {
        let a = fp(&[("kind", json!("x/1")), ("config", json!({"a": 1, "b": 2}))]);
        let b = fp(&[("config", json!({"b": 2, "a": 1})), ("kind", json!("x/1"))]);
        assert_eq!(a.key(), b.key());
    }

    #[test]
    fn key_is_stable_across_processes() {
        // A fixed expected value: any change to hashing makes this fail, on purpose.
        let a = fp(&[("kind", json!("x/1"))]);
        assert_eq!(a.key(), fp(&[("kind", json!("x/1"))]).key());
        assert_eq!(a.key().0.len(), 64);
        assert_eq!(
            Component::value(json!({"b": 1, "a": [1, "x"]})).hash,
            blake3::hash(br#"{"a":[1,"x"],"b":1}"#).to_hex().to_string()
        );
    }

    #[test]
    fn every_component_changes_the_key() {
        let base = fp(&[("kind", json!("x/1")), ("params.tag", json!("alpha"))]);
        let changed = fp(&[("kind", json!("x/1")), ("params.tag", json!("beta"))]);
        let added = fp(&[
            ("kind", json!("x/1")),
            ("params.tag", json!("alpha")),
            ("env", json!({})),
        ]);
        assert_ne!(base.key(), changed.key());
        assert_ne!(base.key(), added.key());
    }

    #[test]
    fn diff_names_values_and_files() {
        let mut old = fp(&[
            ("params.tag", json!("alpha")),
            ("config", json!({"m": "5", "e": 1})),
        ]);
        let mut new = fp(&[
            ("params.tag", json!("beta")),
            ("config", json!({"m": "10", "e": 1})),
        ]);
        old.insert(
            "inputs.docs",
            Component::manifest(BTreeMap::from([
                ("doc-05.txt".into(), "h1".into()),
                ("doc-06.txt".into(), "h2".into()),
            ])),
        );
        new.insert(
            "inputs.docs",
            Component::manifest(BTreeMap::from([
                ("doc-05.txt".into(), "h9".into()),
                ("doc-06.txt".into(), "h2".into()),
                ("doc-12.txt".into(), "h3".into()),
            ])),
        );
        let text: Vec<String> = diff(&old, &new).iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "config.m: \"5\" -> \"10\"",
                "inputs.docs: changed doc-05.txt, added doc-12.txt",
                "params.tag: \"alpha\" -> \"beta\"",
            ]
        );
    }
}
