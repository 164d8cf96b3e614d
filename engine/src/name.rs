//! Names that become paths: step names (Azure's documented rule), data and port names, and
//! file names. Every name that ends up as a path component passes one of these checks, in the
//! engine (at build) and in the spec parser, so no name can point a path out of its folder.

use std::fmt;

use crate::error::BuildError;

/// A validated step name: `^[a-z]([-a-z0-9]*[a-z0-9])?$`, 3 to 32 characters.
///
/// Azure documents this rule but its client never checks it; stepgraph does, because the
/// name becomes a folder name, a cache-record key and a CLI argument.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StepName(String);

impl StepName {
    /// Check `name` against the rule.
    ///
    /// # Errors
    /// [`BuildError::InvalidStepName`] saying which part of the rule is broken.
    pub fn new(name: &str) -> Result<Self, BuildError> {
        match check_step_name(name) {
            None => Ok(StepName(name.to_string())),
            Some(reason) => Err(BuildError::InvalidStepName {
                step: name.to_string(),
                reason: reason.to_string(),
            }),
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The reason `name` breaks the rule, or `None` when it is valid.
pub fn check_step_name(name: &str) -> Option<&'static str> {
    let len = name.chars().count();
    if !(3..=32).contains(&len) {
        return Some("must be 3 to 32 characters long");
    }
    let bytes = name.as_bytes();
    if !bytes[0].is_ascii_lowercase() {
        return Some("must start with a lowercase letter");
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
    {
        return Some("may contain only lowercase letters, digits and dashes");
    }
    if bytes[bytes.len() - 1] == b'-' {
        return Some("must not end with a dash");
    }
    None
}

/// The longest pipeline name.
pub(crate) const MAX_PIPELINE_NAME_LEN: usize = 128;

/// The reason a pipeline name is refused, or `None` when it is valid: 1 to 128 characters,
/// none of them a control character (the name is printed in tables, run lines and reports).
pub(crate) fn check_pipeline_name(name: &str) -> Option<&'static str> {
    if name.trim().is_empty() {
        return Some("must not be empty");
    }
    if name.chars().count() > MAX_PIPELINE_NAME_LEN {
        return Some("must be at most 128 characters long");
    }
    if name.chars().any(char::is_control) {
        return Some("must not contain control characters (newlines, tabs, escapes)");
    }
    None
}

/// The longest data, port or dataset name.
pub const MAX_NAME_LEN: usize = 64;

/// The reason a data, port, dataset or model name breaks the name rule, or `None` when it is
/// valid.
///
/// The rule: 1 to 64 characters, lowercase ASCII letters, digits, `_` and `-`, not starting with
/// `-`. So a name never holds a path separator and is never `.` or `..`: it is safe as one
/// path component (`runs/<id>/<step>/outputs/<name>`).
pub fn check_data_name(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Some("must be 1 to 64 characters long");
    }
    if name.starts_with('-') {
        return Some("must not start with a dash");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Some(
            "may contain only lowercase letters, digits, underscores and dashes (no path separators or dots)",
        );
    }
    None
}

/// The reason a file name (such as `append_row_file_name`) is not one plain path component,
/// or `None` when it is valid.
///
/// A file name is 1 to 255 bytes, not `.` or `..`, and holds no `/`, `\\`, NUL or control
/// character.
pub fn check_file_name(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 255 {
        return Some("must be 1 to 255 bytes long");
    }
    if name == "." || name == ".." {
        return Some("must not be \".\" or \"..\"");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return Some("must be a plain file name, without path separators or control characters");
    }
    None
}

/// The reason a model name breaks Azure's rule for registered models, or `None` when it is
/// valid.
///
/// The rule: 1 to 255 characters, ASCII letters, digits, `-`, `_` and `.`, starting with a
/// letter or a digit. So a model name is one safe path component (`<AZUREML_MODEL_DIR>/<name>`),
/// never `.` or `..`, and never holds the `:` of a `name:version` reference.
pub fn check_model_name(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 255 {
        return Some("must be 1 to 255 characters long");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Some("must start with a letter or a digit");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return Some("may contain only letters, digits, dashes, underscores and dots");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_follow_azure_s_rule() {
        for ok in ["iris-prs", "sklearn_mnist.v2", "A1", &"m".repeat(255)] {
            assert_eq!(check_model_name(ok), None, "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "-x",
            "_x",
            "a/b",
            "a:1",
            "a b",
            &"m".repeat(256),
        ] {
            assert!(check_model_name(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn data_names_are_single_safe_components() {
        for ok in ["scores", "a", "out_1", "b-out", "0day", &"a".repeat(64)] {
            assert_eq!(check_data_name(ok), None, "{ok}");
        }
        for bad in [
            "",
            "/home/someone/victim",
            "../x",
            "..",
            ".",
            "a/b",
            "a\\b",
            "-x",
            "Out",
            "a.b",
            "a b",
            "x\0",
            &"a".repeat(65),
        ] {
            assert!(check_data_name(bad).is_some(), "{bad:?} passed");
        }
    }

    #[test]
    fn file_names_are_single_components() {
        for ok in ["parallel_run_step.txt", "out.csv", ".hidden", "a..b"] {
            assert_eq!(check_file_name(ok), None, "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "/etc/passwd",
            "a\\b",
            "a\nb",
            "x\0",
        ] {
            assert!(check_file_name(bad).is_some(), "{bad:?} passed");
        }
    }

    #[test]
    fn accepts_azure_style_names() {
        for ok in ["abc", "score-images", "a1-b2", &"a".repeat(32)] {
            assert!(StepName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_each_rule() {
        let cases = [
            ("ab", "3 to 32"),
            (&"a".repeat(33) as &str, "3 to 32"),
            ("1abc", "start with"),
            ("Abc", "start with"),
            ("ab_c", "only lowercase"),
            ("abC", "only lowercase"),
            ("abc-", "end with a dash"),
        ];
        for (name, reason) in cases {
            match StepName::new(name) {
                Err(BuildError::InvalidStepName { step, reason: r }) => {
                    assert_eq!(step, name);
                    assert!(r.contains(reason), "{name}: {r}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}
