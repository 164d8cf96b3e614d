//! Azure's `partition_format` (`Dataset.File.from_files(path, partition_format=...)`):
//! partition values read from a file's path relative to its dataset.
//!
//! - `{name}` matches one or more characters other than `/` and gives a string value;
//! - `{name:yyyy/MM/dd}` matches a date written with `yyyy` (4 digits), `MM`, `dd`, `HH`,
//!   `mm`, `ss` (2 digits each) and literal characters in between; its value is
//!   `YYYY-MM-DD`, or `YYYY-MM-DDTHH:MM:SS` when the format has a time part (missing parts
//!   are `01` for month and day, `00` for the time);
//! - everything else is literal. As on Azure, the format covers the end of the path: it
//!   matches the whole relative path, or its end after a `/` (a leading `/` in the format is
//!   ignored).
//!
//! A file whose path does not match has no partition values.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A file's partition values in the order of the format's fields (the order of the columns
/// they become). On the wire, a JSON object whose keys keep that order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PartitionValues(pub Vec<(String, String)>);

impl PartitionValues {
    /// The value of field `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<const N: usize> From<[(&str, &str); N]> for PartitionValues {
    fn from(pairs: [(&str, &str); N]) -> Self {
        PartitionValues(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
}

impl Serialize for PartitionValues {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for PartitionValues {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = PartitionValues;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of partition values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    out.push((k, v));
                }
                Ok(PartitionValues(out))
            }
        }
        deserializer.deserialize_map(Pairs)
    }
}

/// An error in a `partition_format`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("partition_format {format:?}: {reason}")]
pub struct FormatError {
    /// The format as given.
    pub format: String,
    /// What is wrong with it.
    pub reason: String,
}

/// One date or time part of a `{name:...}` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DatePart {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
}

impl DatePart {
    fn width(self) -> usize {
        match self {
            DatePart::Year => 4,
            _ => 2,
        }
    }

    fn token(self) -> &'static str {
        match self {
            DatePart::Year => "yyyy",
            DatePart::Month => "MM",
            DatePart::Day => "dd",
            DatePart::Hour => "HH",
            DatePart::Minute => "mm",
            DatePart::Second => "ss",
        }
    }
}

/// A piece of a date field's pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DatePiece {
    Part(DatePart),
    Literal(char),
}

/// A piece of a format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    /// `{name}`: one or more characters other than `/`.
    Field(String),
    /// `{name:yyyy/MM/dd}`.
    Date(String, Vec<DatePiece>),
}

/// A parsed `partition_format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFormat {
    text: String,
    pieces: Vec<Piece>,
    keys: Vec<String>,
}

impl fmt::Display for PartitionFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartitionFormat {
    /// Parse `format`.
    ///
    /// # Errors
    /// A [`FormatError`] for an unbalanced brace, an empty or repeated name, two fields with
    /// nothing between them, a field with no field in it, or an unknown date part.
    pub fn parse(format: &str) -> Result<Self, FormatError> {
        let err = |reason: String| FormatError {
            format: format.to_string(),
            reason,
        };
        let body = format.strip_prefix('/').unwrap_or(format);
        let mut pieces: Vec<Piece> = Vec::new();
        let mut keys: Vec<String> = Vec::new();
        let mut literal = String::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            match c {
                '{' => {
                    let mut inner = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        match c {
                            '}' => {
                                closed = true;
                                break;
                            }
                            '{' => return Err(err("a '{' inside a field".into())),
                            c => inner.push(c),
                        }
                    }
                    if !closed {
                        return Err(err("a '{' without its '}'".into()));
                    }
                    if literal.is_empty() && !pieces.is_empty() {
                        return Err(err(
                            "two fields with nothing between them cannot be told apart".into(),
                        ));
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    let (name, date) = match inner.split_once(':') {
                        Some((n, d)) => (
                            n.to_string(),
                            Some(parse_date(d).map_err(|e| err(e.to_string()))?),
                        ),
                        None => (inner, None),
                    };
                    if name.is_empty() || name.contains('/') {
                        return Err(err(format!(
                            "field name {name:?} must be non-empty and hold no '/'"
                        )));
                    }
                    if keys.contains(&name) {
                        return Err(err(format!("field {name:?} appears twice")));
                    }
                    keys.push(name.clone());
                    pieces.push(match date {
                        Some(d) => Piece::Date(name, d),
                        None => Piece::Field(name),
                    });
                }
                '}' => return Err(err("a '}' without its '{'".into())),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        if keys.is_empty() {
            return Err(err(
                "no field: name the partition parts as {name} (e.g. \"{user}/{season}/{genre}.wav\")"
                    .into(),
            ));
        }
        Ok(PartitionFormat {
            text: format.to_string(),
            pieces,
            keys,
        })
    }

    /// The field names, in the order they appear.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The partition values of the file at `relative` (`/`-separated, relative to the
    /// dataset), or `None` when it does not match.
    pub fn values(&self, relative: &str) -> Option<PartitionValues> {
        let relative = relative.strip_prefix('/').unwrap_or(relative);
        let starts = std::iter::once(0).chain(
            relative
                .char_indices()
                .filter(|(_, c)| *c == '/')
                .map(|(i, _)| i + 1),
        );
        for start in starts {
            let mut out = Vec::new();
            if match_pieces(&self.pieces, &relative[start..], &mut out) {
                return Some(PartitionValues(out));
            }
        }
        None
    }
}

/// Why the date part of a `{name:...}` field does not parse; each names the date format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum DateError {
    /// A run of a date letter that is not one of the tokens (`yyy`, `M`).
    #[error("date part {token:?} in {spec:?}: expected yyyy, MM, dd, HH, mm or ss")]
    BadPart {
        /// The run of letters.
        token: String,
        /// The date format.
        spec: String,
    },
    /// A date part given twice.
    #[error("date part {token:?} appears twice in {spec:?}")]
    Repeated {
        /// The part.
        token: String,
        /// The date format.
        spec: String,
    },
    /// A letter, digit or brace that is neither a date part nor a separator.
    #[error("{c:?} in date format {spec:?}: expected yyyy, MM, dd, HH, mm, ss and separators")]
    BadChar {
        /// The character.
        c: char,
        /// The date format.
        spec: String,
    },
    /// Separators only.
    #[error("date format {spec:?} has no date part (yyyy, MM, dd, HH, mm, ss)")]
    NoPart {
        /// The date format.
        spec: String,
    },
}

fn parse_date(spec: &str) -> Result<Vec<DatePiece>, DateError> {
    let mut out = Vec::new();
    let chars: Vec<char> = spec.chars().collect();
    let mut i = 0;
    let mut seen: Vec<DatePart> = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        let run = chars[i..].iter().take_while(|x| **x == c).count();
        let part = match c {
            'y' => Some(DatePart::Year),
            'M' => Some(DatePart::Month),
            'd' => Some(DatePart::Day),
            'H' => Some(DatePart::Hour),
            'm' => Some(DatePart::Minute),
            's' => Some(DatePart::Second),
            _ => None,
        };
        match part {
            Some(p) => {
                let token: String = chars[i..i + run].iter().collect();
                if token != p.token() {
                    return Err(DateError::BadPart {
                        token,
                        spec: spec.to_string(),
                    });
                }
                if seen.contains(&p) {
                    return Err(DateError::Repeated {
                        token,
                        spec: spec.to_string(),
                    });
                }
                seen.push(p);
                out.push(DatePiece::Part(p));
                i += run;
            }
            None if c.is_ascii_alphanumeric() || c == '{' || c == '}' => {
                return Err(DateError::BadChar {
                    c,
                    spec: spec.to_string(),
                });
            }
            None => {
                out.push(DatePiece::Literal(c));
                i += 1;
            }
        }
    }
    if seen.is_empty() {
        return Err(DateError::NoPart {
            spec: spec.to_string(),
        });
    }
    Ok(out)
}

/// Match `pieces` against all of `s`, pushing the values into `out`.
fn match_pieces(pieces: &[Piece], s: &str, out: &mut Vec<(String, String)>) -> bool {
    let Some((first, rest)) = pieces.split_first() else {
        return s.is_empty();
    };
    match first {
        Piece::Literal(l) => s
            .strip_prefix(l.as_str())
            .is_some_and(|tail| match_pieces(rest, tail, out)),
        Piece::Field(name) => {
            // One or more characters other than '/', shortest first.
            let limit = s.find('/').unwrap_or(s.len());
            for (end, _) in s[..limit]
                .char_indices()
                .skip(1)
                .chain(std::iter::once((limit, ' ')))
            {
                if end == 0 {
                    continue;
                }
                let mark = out.len();
                out.push((name.clone(), s[..end].to_string()));
                if match_pieces(rest, &s[end..], out) {
                    return true;
                }
                out.truncate(mark);
            }
            false
        }
        Piece::Date(name, parts) => match match_date(parts, s) {
            Some((value, used)) => {
                let mark = out.len();
                out.push((name.clone(), value));
                if match_pieces(rest, &s[used..], out) {
                    return true;
                }
                out.truncate(mark);
                false
            }
            None => false,
        },
    }
}

/// A date at the start of `s`: its value and the bytes it used.
fn match_date(parts: &[DatePiece], s: &str) -> Option<(String, usize)> {
    let bytes = s.as_bytes();
    let mut pos = 0;
    let mut found: BTreeMap<&'static str, &str> = BTreeMap::new();
    let mut has_time = false;
    for piece in parts {
        match piece {
            DatePiece::Literal(c) => {
                let rest = s.get(pos..)?;
                if !rest.starts_with(*c) {
                    return None;
                }
                pos += c.len_utf8();
            }
            DatePiece::Part(p) => {
                let w = p.width();
                let digits = bytes.get(pos..pos + w)?;
                if !digits.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                has_time |= matches!(p, DatePart::Hour | DatePart::Minute | DatePart::Second);
                found.insert(p.token(), s.get(pos..pos + w)?);
                pos += w;
            }
        }
    }
    let get = |t: &str, default: &'static str| found.get(t).copied().unwrap_or(default);
    if !is_valid_date_time(
        get("yyyy", "0001"),
        get("MM", "01"),
        get("dd", "01"),
        get("HH", "00"),
        get("mm", "00"),
        get("ss", "00"),
    ) {
        return None;
    }
    let date = format!(
        "{}-{}-{}",
        get("yyyy", "0001"),
        get("MM", "01"),
        get("dd", "01")
    );
    let value = if has_time {
        format!(
            "{date}T{}:{}:{}",
            get("HH", "00"),
            get("mm", "00"),
            get("ss", "00")
        )
    } else {
        date
    };
    Some((value, pos))
}

/// True when the digits name a real calendar date and time (`2024/13/45` does not).
fn is_valid_date_time(y: &str, mo: &str, d: &str, h: &str, mi: &str, s: &str) -> bool {
    let num = |t: &str| t.parse::<u32>().ok();
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(s)) =
        (num(y), num(mo), num(d), num(h), num(mi), num(s))
    else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match mo {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    y >= 1 && (1..=days).contains(&d) && h < 24 && mi < 60 && s < 60
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn values(format: &str, path: &str) -> Option<Vec<(String, String)>> {
        PartitionFormat::parse(format).ok()?.values(path).map(|m| {
            let mut v = m.0;
            v.sort();
            v
        })
    }

    fn pairs(p: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        let mut v: Vec<(String, String)> = p
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        v.sort();
        Some(v)
    }

    #[test]
    fn folder_fields_and_the_file_name() {
        assert_eq!(
            values("{user}/{season}/{genres}.wav", "ana/summer/jazz.wav"),
            pairs(&[("genres", "jazz"), ("season", "summer"), ("user", "ana")])
        );
        assert_eq!(values("{user}/{season}/{genres}.wav", "ana/jazz.wav"), None);
        assert_eq!(
            values("{user}/{season}/{genres}.wav", "ana/s/jazz.mp3"),
            None
        );
    }

    #[test]
    fn the_format_covers_the_end_of_the_path() {
        // Azure's example: '/{Department}/{PartitionDate:yyyy/MM/dd}/data.parquet'.
        assert_eq!(
            values(
                "/{Department}/{PartitionDate:yyyy/MM/dd}/data.parquet",
                "raw/Accounts/2019/01/02/data.parquet"
            ),
            pairs(&[("Department", "Accounts"), ("PartitionDate", "2019-01-02")])
        );
    }

    #[test]
    fn dates_with_time_and_partial_dates() {
        assert_eq!(
            values("{t:yyyy-MM-dd_HH}/x.csv", "2024-03-09_17/x.csv"),
            pairs(&[("t", "2024-03-09T17:00:00")])
        );
        assert_eq!(
            values("{m:yyyy/MM}/{f}.csv", "2024/03/a.csv"),
            pairs(&[("f", "a"), ("m", "2024-03-01")])
        );
        assert_eq!(values("{m:yyyy/MM}/{f}.csv", "2024/3/a.csv"), None);
    }

    #[test]
    fn impossible_dates_do_not_match() {
        let f = "{d:yyyy/MM/dd}/{f}.csv";
        for bad in [
            "2024/13/45/a.csv",
            "2024/00/10/a.csv",
            "2024/02/30/a.csv",
            "2023/02/29/a.csv",
            "0000/01/01/a.csv",
        ] {
            assert_eq!(values(f, bad), None, "{bad}");
        }
        assert_eq!(
            values(f, "2024/02/29/a.csv"),
            pairs(&[("d", "2024-02-29"), ("f", "a")])
        );
        assert_eq!(
            values("{t:yyyy-MM-dd_HH}/x.csv", "2024-03-09_24/x.csv"),
            None
        );
        assert_eq!(values("{t:HHmm}/x.csv", "1260/x.csv"), None);
    }

    #[test]
    fn values_keep_the_formats_order_on_the_wire() {
        let v = PartitionFormat::parse("{user}/{season}/{genres}.wav")
            .ok()
            .and_then(|f| f.values("ana/summer/jazz.wav"));
        let text = serde_json::to_string(&v).unwrap_or_default();
        assert_eq!(text, r#"{"user":"ana","season":"summer","genres":"jazz"}"#);
        let back: Option<PartitionValues> = serde_json::from_str(&text).ok();
        assert_eq!(back, v);
    }

    #[test]
    fn a_field_may_be_part_of_a_name() {
        assert_eq!(
            values("{region}_{year}.csv", "eu_west_2020.csv"),
            pairs(&[("region", "eu"), ("year", "west_2020")])
        );
    }

    #[test]
    fn bad_formats_are_refused_with_a_reason() {
        for (f, word) in [
            ("{user", "without its '}'"),
            ("user}", "without its '{'"),
            ("{}", "non-empty"),
            ("{a}{b}", "nothing between"),
            ("{a}/{a}", "twice"),
            ("plain/path.csv", "no field"),
            ("{d:yyy}", "\"yyy\""),
            ("{d:yyyy/XX}", "'X'"),
            ("{d:-}", "no date part"),
            ("{a{b}}", "inside a field"),
        ] {
            match PartitionFormat::parse(f) {
                Ok(p) => panic!("{f:?} parsed as {p:?}"),
                Err(e) => assert!(e.to_string().contains(word), "{f:?}: {e}"),
            }
        }
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9_]{0,6}"
    }

    fn value() -> impl Strategy<Value = String> {
        "[A-Za-z0-9 .=-]{1,8}"
    }

    proptest! {
        /// A path written from a format and values gives the values back.
        #[test]
        fn values_round_trip(
            fields in prop::collection::vec((name(), value(), prop::bool::ANY), 1..5),
            ext in "[a-z]{1,4}",
        ) {
            let mut seen = std::collections::BTreeSet::new();
            let fields: Vec<_> = fields.into_iter().filter(|(n, _, _)| seen.insert(n.clone())).collect();
            // Each field is a folder, or the file name with an extension.
            let mut format = String::new();
            let mut path = String::new();
            for (i, (n, v, _)) in fields.iter().enumerate() {
                if i > 0 {
                    format.push('/');
                    path.push('/');
                }
                format.push_str(&format!("{{{n}}}"));
                path.push_str(v);
            }
            format.push_str(&format!(".{ext}"));
            path.push_str(&format!(".{ext}"));
            let parsed = PartitionFormat::parse(&format).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let got = parsed.values(&path);
            // The last field stops at the shortest match, so a value holding ".ext" may be cut
            // earlier; values without the extension's text always come back exactly.
            let last_ok = fields.last().is_some_and(|(_, v, _)| !v.contains('.'));
            if last_ok {
                let want: Vec<(String, String)> =
                    fields.iter().map(|(n, v, _)| (n.clone(), v.clone())).collect();
                prop_assert_eq!(got.map(|g| g.0), Some(want));
            } else {
                prop_assert!(got.is_some());
            }
            prop_assert_eq!(parsed.keys().len(), fields.len());
        }

        /// Parsing never panics, and matching any path with any parsed format never panics.
        #[test]
        fn parse_and_match_never_panic(format in "[{}a-z:/yMdHms._-]{0,16}", path in "[a-z0-9/._-]{0,24}") {
            if let Ok(p) = PartitionFormat::parse(&format) {
                let _ = p.values(&path);
            }
        }

        /// Dates come back normalised.
        #[test]
        fn dates_round_trip(y in 1000u32..9999, m in 1u32..13, d in 1u32..29, h in 0u32..24) {
            let p = PartitionFormat::parse("{when:yyyy/MM/dd/HH}/{f}.csv").map_err(|e| TestCaseError::fail(e.to_string()))?;
            let got = p.values(&format!("{y:04}/{m:02}/{d:02}/{h:02}/part-1.csv"));
            let want = vec![
                ("when".to_string(), format!("{y:04}-{m:02}-{d:02}T{h:02}:00:00")),
                ("f".to_string(), "part-1".to_string()),
            ];
            prop_assert_eq!(got.map(|g| g.0), Some(want));
        }
    }
}
