//! Step names, checked against Azure's documented rule.

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

#[cfg(test)]
mod tests {
    use super::*;

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
