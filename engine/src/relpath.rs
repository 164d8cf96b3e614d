//! Relative paths as exact, reversible strings.
//!
//! File names on Unix are bytes, not text. Manifests, fingerprints and `explain` need strings,
//! so a relative path is written as its `/`-joined components with every valid UTF-8 run kept
//! verbatim, a backslash written `\\`, and every byte that is not valid UTF-8 written `\xNN`.
//! The encoding is injective (`a\xff.txt` and `a\xfe.txt` stay apart, and neither meets a
//! real name that holds a backslash), and [`decode`] gives back the exact bytes. Names that are
//! valid UTF-8 without a backslash, nearly all of them, read as themselves.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

/// Why a string is not an encoded relative path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path:?} is not a safe relative path: {reason}")]
pub struct RelPathError {
    /// The string given.
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Encode `rel` (a path relative to some root) as described in the module docs.
///
/// Components other than plain names (`.`, `..`, a root) are dropped: callers pass the result
/// of `strip_prefix` on a walked tree, which has none.
pub fn encode(rel: &Path) -> String {
    let mut out = String::new();
    for c in rel.components() {
        let Component::Normal(name) = c else { continue };
        if !out.is_empty() {
            out.push('/');
        }
        encode_component(name.as_bytes(), &mut out);
    }
    out
}

fn encode_component(bytes: &[u8], out: &mut String) {
    for chunk in bytes.utf8_chunks() {
        for ch in chunk.valid().chars() {
            if ch == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(ch);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

/// The exact relative path that [`encode`] wrote as `s`.
///
/// # Errors
/// [`RelPathError`] when `s` is empty, absolute, has an empty, `.` or `..` component, or a
/// malformed escape: such a string never came from [`encode`], and joining it to a folder
/// could leave that folder.
pub fn decode(s: &str) -> Result<PathBuf, RelPathError> {
    let err = |reason| RelPathError {
        path: s.to_string(),
        reason,
    };
    if s.is_empty() {
        return Err(err("it is empty"));
    }
    let mut out = PathBuf::new();
    for part in s.split('/') {
        if part.is_empty() {
            return Err(err("it is absolute or has an empty component"));
        }
        let bytes = decode_component(part).ok_or_else(|| err("it has a malformed escape"))?;
        if bytes == b"." || bytes == b".." || bytes.contains(&0) {
            return Err(err("it has a \".\", \"..\" or NUL component"));
        }
        out.push(OsString::from_vec(bytes));
    }
    Ok(out)
}

fn decode_component(part: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(part.len());
    let bytes = part.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1)? {
            b'\\' => {
                out.push(b'\\');
                i += 2;
            }
            b'x' => {
                let hex = part.get(i + 2..i + 4)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 4;
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::ffi::OsStr;

    fn p(bytes: &[u8]) -> PathBuf {
        PathBuf::from(OsStr::from_bytes(bytes))
    }

    #[test]
    fn plain_names_read_as_themselves() {
        assert_eq!(encode(Path::new("a/b c/ü.txt")), "a/b c/ü.txt");
    }

    #[test]
    fn non_utf8_names_stay_apart_and_round_trip() -> Result<(), RelPathError> {
        let a = encode(&p(b"d/a\xff.txt"));
        let b = encode(&p(b"d/a\xfe.txt"));
        assert_eq!(a, "d/a\\xff.txt");
        assert_ne!(a, b);
        assert_eq!(decode(&a)?, p(b"d/a\xff.txt"));
        // A real name that looks like an escape is escaped itself.
        let lookalike = encode(Path::new("a\\xff.txt"));
        assert_eq!(lookalike, "a\\\\xff.txt");
        assert_ne!(lookalike, a);
        assert_eq!(decode(&lookalike)?, Path::new("a\\xff.txt"));
        Ok(())
    }

    #[test]
    fn decode_refuses_paths_that_leave_the_folder() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            ".",
            "a/.",
            "a\\",
            "a\\x4",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        // An escaped dot-dot is still dot-dot.
        assert!(decode("\\x2e\\x2e/x").is_err());
    }

    proptest! {
        #[test]
        fn encoding_is_injective_and_reversible(
            parts in proptest::collection::vec(
                proptest::collection::vec(any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0), 1..8),
                1..4,
            )
        ) {
            let parts: Vec<Vec<u8>> = parts
                .into_iter()
                .filter(|c| c.as_slice() != b"." && c.as_slice() != b"..")
                .collect();
            prop_assume!(!parts.is_empty());
            let path: PathBuf = parts.iter().map(|c| OsStr::from_bytes(c)).collect();
            let enc = encode(&path);
            prop_assert_eq!(decode(&enc).ok(), Some(path));
        }
    }
}
