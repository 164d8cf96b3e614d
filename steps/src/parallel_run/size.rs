//! Azure's `mini_batch_size`, parsed once when the config is built ([`MiniBatchSize`]) and
//! resolved against the kind of the step's inputs when the step is built ([`BatchSize`]).
//!
//! Azure's rule is `^\d+([kKmMgG][bB])*$`. For a FileDataset the value is a number of files (a
//! unit is refused); for a TabularDataset it is an approximate size in bytes: a plain number is
//! bytes, `KB` ×1024, `MB` ×1024², `GB` ×1024³, case insensitive. The regex syntactically allows
//! a repeated unit (`"5KBKB"`) but gives it no meaning, so a repeated unit is refused for
//! tabular inputs. Not given, it is 10 files or `"1MB"`.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};

use super::config::ConfigError;

/// Files per mini-batch when `mini_batch_size` is not given (file inputs).
pub const DEFAULT_FILES: u64 = 10;

/// Bytes per mini-batch when `mini_batch_size` is not given (tabular inputs): Azure's `"1MB"`.
pub const DEFAULT_BYTES: u64 = 1 << 20;

/// A `mini_batch_size` as given, checked against Azure's rule and greater than 0. What it
/// means depends on the inputs: see [`MiniBatchSize::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiniBatchSize {
    /// The string as given (kept for the fingerprint and for messages).
    text: String,
    /// Its number; `None` when it does not fit in a `u64`.
    number: Option<u64>,
    /// Its unit.
    unit: Unit,
}

/// The unit part of a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// No unit: files, or bytes.
    None,
    /// One of KB, MB, GB: its multiplier.
    One(u64),
    /// Two or more units (allowed by Azure's regex, without a meaning).
    Repeated,
}

/// `mini_batch_size` as a caller gives it: a string (`"5"`, `"10MB"`), or in a JSON spec also a
/// whole number of files (`5`). [`MiniBatchSize::parse`] checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SizeText(pub(crate) String);

impl<'de> Deserialize<'de> for SizeText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SizeText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number of files or a size like \"10MB\"")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<SizeText, E> {
                Ok(SizeText(n.to_string()))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<SizeText, E> {
                Ok(SizeText(s.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A mini-batch size resolved against the kind of the inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchSize {
    /// Number of files per mini-batch (FileDataset input).
    Files(u64),
    /// Approximate number of bytes of whole records per mini-batch (TabularDataset input).
    Bytes(u64),
}

/// A `mini_batch_size` that means nothing for the step's inputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid mini_batch_size {value:?}: {reason}")]
pub struct SizeError {
    /// The string as given.
    pub value: String,
    /// Why it is invalid.
    pub reason: String,
}

impl MiniBatchSize {
    /// Check `s` against Azure's rule `^\d+([kKmMgG][bB])*$` and that it is greater than 0.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `mini_batch_size`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        // `digits` counts ASCII bytes, so it is a char boundary.
        let (number, rest) = s.split_at(digits);
        if digits == 0 || !(rest.is_empty() || looks_like_units(rest)) {
            return Err(ConfigError::new(
                "mini_batch_size",
                format!(
                    "{s:?} does not match ^\\d+([kKmMgG][bB])*$ (e.g. \"10\", \"64KB\", \"1MB\")"
                ),
            ));
        }
        if number.bytes().all(|b| b == b'0') {
            return Err(ConfigError::new(
                "mini_batch_size",
                "must be greater than 0",
            ));
        }
        let unit = match rest.as_bytes() {
            [] => Unit::None,
            [p, _] => Unit::One(match p.to_ascii_lowercase() {
                b'k' => 1 << 10,
                b'm' => 1 << 20,
                _ => 1 << 30,
            }),
            _ => Unit::Repeated,
        };
        Ok(MiniBatchSize {
            text: s.to_string(),
            number: number.parse().ok(),
            unit,
        })
    }

    /// The string as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// What `size` means for file inputs (`tabular` false) or tabular inputs; `None` is the
    /// default, 10 files or 1 MB.
    ///
    /// # Errors
    /// A [`SizeError`]: a unit for file inputs, a repeated unit for tabular ones, or a size
    /// over `u64`.
    pub fn resolve(size: Option<&Self>, tabular: bool) -> Result<BatchSize, SizeError> {
        let Some(size) = size else {
            return Ok(if tabular {
                BatchSize::Bytes(DEFAULT_BYTES)
            } else {
                BatchSize::Files(DEFAULT_FILES)
            });
        };
        let too_large = || size.invalid("mini_batch_size is too large");
        let number = size.number.ok_or_else(too_large)?;
        match (tabular, size.unit) {
            (false, Unit::None) => Ok(BatchSize::Files(number)),
            (false, _) => Err(size.invalid(
                "a size unit (KB, MB, GB) is only valid for a TabularDataset; \
                 for a FileDataset mini_batch_size is a number of files",
            )),
            (true, Unit::None) => Ok(BatchSize::Bytes(number)),
            (true, Unit::One(m)) => number
                .checked_mul(m)
                .map(BatchSize::Bytes)
                .ok_or_else(too_large),
            (true, Unit::Repeated) => Err(size.invalid(
                "more than one unit; Azure's pattern ^\\d+([kKmMgG][bB])*$ allows repeated units \
                 but gives them no meaning, so use exactly one of KB, MB or GB",
            )),
        }
    }

    fn invalid(&self, reason: &str) -> SizeError {
        SizeError {
            value: self.text.clone(),
            reason: reason.to_string(),
        }
    }
}

/// True if `unit` is one unit of the form `[kKmMgG][bB]`.
fn is_unit(unit: &[u8]) -> bool {
    matches!(unit, [p, b] if matches!(p.to_ascii_lowercase(), b'k' | b'm' | b'g')
        && b.eq_ignore_ascii_case(&b'b'))
}

/// True if `rest` is one or more units (`([kKmMgG][bB])+`).
fn looks_like_units(rest: &str) -> bool {
    let bytes = rest.as_bytes();
    // `is_unit` rejects an odd trailing byte (a chunk of length 1).
    !bytes.is_empty() && bytes.chunks(2).all(is_unit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes(s: &str) -> Result<u64, String> {
        let size = MiniBatchSize::parse(s).map_err(|e| e.to_string())?;
        match MiniBatchSize::resolve(Some(&size), true).map_err(|e| e.to_string())? {
            BatchSize::Bytes(n) => Ok(n),
            other => Err(format!("{other:?}")),
        }
    }

    fn files(s: &str) -> Result<u64, String> {
        let size = MiniBatchSize::parse(s).map_err(|e| e.to_string())?;
        match MiniBatchSize::resolve(Some(&size), false).map_err(|e| e.to_string())? {
            BatchSize::Files(n) => Ok(n),
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn defaults_are_ten_files_or_one_megabyte() {
        assert_eq!(
            MiniBatchSize::resolve(None, false),
            Ok(BatchSize::Files(10))
        );
        assert_eq!(
            MiniBatchSize::resolve(None, true),
            Ok(BatchSize::Bytes(1 << 20))
        );
    }

    #[test]
    fn bytes_accept_azure_forms() {
        let ok = [
            ("1024", 1024),
            ("64KB", 64 * 1024),
            ("64kb", 64 * 1024),
            ("1Kb", 1024),
            ("10mb", 10 << 20),
            ("10MB", 10 << 20),
            ("1GB", 1 << 30),
            ("007", 7),
        ];
        for (s, expected) in ok {
            assert_eq!(bytes(s), Ok(expected), "{s}");
        }
    }

    #[test]
    fn bytes_reject_invalid_forms() {
        for s in [
            "",
            "0",
            "0KB",
            "1.5MB",
            "MB",
            "10 MB",
            " 10",
            "10 ",
            "-1",
            "+1",
            "5KBKB",
            "5MBGB",
            "5TB",
            "5K",
            "5B",
            "5KBK",
            "99999999999999999999",
            "18446744073709551615GB",
        ] {
            let err = bytes(s).expect_err(s);
            assert!(err.contains("mini_batch_size"), "{s:?}: {err}");
        }
        let err = bytes("5KBKB").expect_err("repeated unit");
        assert!(err.contains("more than one unit"), "{err}");
        assert_eq!(
            bytes("99999999999999999999"),
            Err(
                "invalid mini_batch_size \"99999999999999999999\": mini_batch_size is too large"
                    .into()
            )
        );
        assert_eq!(
            bytes("0KB"),
            Err("mini_batch_size: must be greater than 0".into())
        );
        assert_eq!(
            bytes("10 MB"),
            Err("mini_batch_size: \"10 MB\" does not match ^\\d+([kKmMgG][bB])*$ (e.g. \"10\", \"64KB\", \"1MB\")".into())
        );
    }

    #[test]
    fn files_accept_plain_counts_only() {
        assert_eq!(files("10"), Ok(10));
        assert_eq!(files("1"), Ok(1));
        for s in ["", "0", "5KB", "5kb", "1.5", "ten", "-3", "5 "] {
            assert!(files(s).is_err(), "{s:?}");
        }
        let err = files("5KB").expect_err("unit for files");
        assert!(err.contains("only valid for a TabularDataset"), "{err}");
    }

    /// A reference for Azure's regex `^\d+([kKmMgG][bB])*$`, written differently.
    fn azure_rule(s: &str) -> bool {
        let t = s.trim_start_matches(|c: char| c.is_ascii_digit());
        t.len() < s.len()
            && t.len() % 2 == 0
            && t.as_bytes()
                .chunks(2)
                .all(|c| "kKmMgG".as_bytes().contains(&c[0]) && (c[1] == b'b' || c[1] == b'B'))
    }

    proptest! {
        #[test]
        fn parse_follows_azures_rule(s in "[0-9]{0,3}([kKmMgGbBx ]{0,5})|\\PC{0,8}") {
            let zero = s.bytes().take_while(u8::is_ascii_digit).all(|b| b == b'0');
            let parsed = MiniBatchSize::parse(&s);
            prop_assert_eq!(parsed.is_ok(), azure_rule(&s) && !zero, "{:?}", s);
            if let Ok(p) = parsed {
                prop_assert_eq!(p.as_str(), s.as_str());
            }
        }

        #[test]
        fn sizes_resolve_to_their_value(
            n in 1u64..1_000_000,
            unit in prop::sample::select(vec![("", 1u64), ("kb", 1 << 10), ("KB", 1 << 10),
                ("mB", 1 << 20), ("MB", 1 << 20), ("Gb", 1 << 30), ("GB", 1 << 30)]),
        ) {
            let s = format!("{n}{}", unit.0);
            prop_assert_eq!(bytes(&s), Ok(n * unit.1));
            prop_assert_eq!(files(&s).is_ok(), unit.0.is_empty());
            if unit.0.is_empty() {
                prop_assert_eq!(files(&s), Ok(n));
            }
        }
    }
}
