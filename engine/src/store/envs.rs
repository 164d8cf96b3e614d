//! `envs/`: environments steps build into the store (a Python virtual environment per content
//! hash, built by the steps crate), and which of them `cache gc` keeps.
//!
//! Layout, per environment hash `<h>` (32 hex digits):
//! - `envs/<h>/`: the environment; complete only when `envs/<h>/freeze.txt` exists (written
//!   last, atomically). A folder without it is a build that failed or was interrupted: it is
//!   never used, and is rebuilt (or removed by `cache gc`).
//! - `envs/<h>.lock`: flocked while the environment is checked or built, so two builders never
//!   build the same environment at once.
//!
//! A cache entry holds an environment when one of its fingerprint components is a JSON object
//! with `"env_hash": "<h>"`; `cache gc` removes the environments no remaining entry holds.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::fingerprint::Preimage;
use crate::store::records::CacheEntry;

/// The folder of the store's environments.
pub(crate) const ENVS_DIR: &str = "envs";

/// The key of a component value naming an environment of `envs/`.
pub const ENV_HASH_KEY: &str = "env_hash";

/// Whether `name` is an environment hash (32 lower-case hex digits).
pub fn is_env_hash(name: &str) -> bool {
    name.len() == 32
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `envs/` of the store at `root`.
pub(crate) fn envs_dir(root: &Path) -> PathBuf {
    root.join(ENVS_DIR)
}

/// The environment hashes the entries hold (see the module doc).
pub(crate) fn referenced<'a>(entries: impl IntoIterator<Item = &'a CacheEntry>) -> HashSet<String> {
    let mut out = HashSet::new();
    for e in entries {
        for c in e.fingerprint.components.values() {
            if let Preimage::Value(serde_json::Value::Object(m)) = &c.preimage {
                if let Some(serde_json::Value::String(h)) = m.get(ENV_HASH_KEY) {
                    out.insert(h.clone());
                }
            }
        }
    }
    out
}

/// What `cache gc` does with one name in `envs/`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum EnvName {
    /// An environment folder (or its lock file) of this hash.
    Env(String),
    /// A name the store never writes.
    Foreign,
}

/// Classify a name in `envs/`: `<h>` and `<h>.lock`.
pub(crate) fn classify(name: &str) -> EnvName {
    let hash = name.strip_suffix(".lock").unwrap_or(name);
    if is_env_hash(hash) {
        EnvName::Env(hash.to_string())
    } else {
        EnvName::Foreign
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hash_folders_and_their_locks_are_the_store_s() {
        let h = "0123456789abcdef0123456789abcdef";
        assert_eq!(classify(h), EnvName::Env(h.into()));
        assert_eq!(classify(&format!("{h}.lock")), EnvName::Env(h.into()));
        assert_eq!(classify("README"), EnvName::Foreign);
        assert_eq!(classify(&h.to_uppercase()), EnvName::Foreign);
        assert_eq!(classify(&h[1..]), EnvName::Foreign);
    }
}
