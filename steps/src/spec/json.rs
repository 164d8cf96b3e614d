//! The JSON layer of the spec parser: text to [`Value`], and serde's errors turned into
//! sentences that name the file, the step (or dataset, or parameter) and the field, and say
//! what was expected and what was found.
//!
//! To check one field more closely (a name rule, say), give it a type whose `Deserialize`
//! refuses bad values with `de::Error::custom(message)` or `invalid_value` (or says what it
//! expects, as `mini_batch_size`'s `SizeText` does): serde_path_to_error records where it failed, and [`typed`] turns
//! it into `file: step "x": field "outputs[1]": message`. For a check after parsing,
//! [`located`] words a message for any path into the spec.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde_json::Value;

/// At most this many out-of-range numbers are located and reported in one spec.
const MAX_OUT_OF_RANGE: usize = 16;

/// One step of a path into the spec's JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    /// An object member.
    Key(String),
    /// A list element.
    Index(usize),
}

/// Parse `text` into a [`Value`].
///
/// Numbers serde_json cannot hold (`1e309`) are located: each one is reported with its line,
/// column and the step and field it is the value of.
///
/// # Errors
/// One message per problem, each starting with `file`.
pub(super) fn parse_json(text: &str, file: &str) -> Result<Value, Vec<String>> {
    let original = text;
    let mut text = Cow::Borrowed(text);
    // `text` minus `original` in bytes, left of the parse point (numbers are replaced left to
    // right, so every earlier replacement lies before the next one).
    let mut grown: isize = 0;
    // (marker string put in place of the number, the number as written, line, column)
    let mut replaced: Vec<(String, String, usize, usize)> = Vec::new();
    loop {
        let mut de = serde_json::Deserializer::from_str(&text);
        let parsed = match serde_path_to_error::deserialize::<_, Value>(&mut de) {
            Ok(v) => de.end().map(|()| v).map_err(|e| (Vec::new(), e)),
            Err(e) => Err((segs_of(e.path()), e.into_inner())),
        };
        match parsed {
            Ok(v) if replaced.is_empty() => return Ok(v),
            Ok(v) => {
                let mut errors = Vec::new();
                find_markers(&v, &v, &mut Vec::new(), &replaced, file, &mut errors);
                return Err(errors);
            }
            Err((inside, e)) => {
                let (line, column) = (e.line(), e.column());
                let out_of_range = e.to_string().starts_with("number out of range");
                if out_of_range && replaced.len() < MAX_OUT_OF_RANGE {
                    if let Some((start, end)) = number_span(&text, line, column) {
                        let marker = format!("\u{1}stepgraph-number-{}\u{1}", replaced.len());
                        let quoted = Value::String(marker.clone()).to_string();
                        let number = text[start..end].to_string();
                        let (line, column) =
                            line_column(original, start.saturating_add_signed(-grown));
                        let mut t = String::with_capacity(text.len() + quoted.len());
                        t.push_str(&text[..start]);
                        t.push_str(&quoted);
                        t.push_str(&text[end..]);
                        text = Cow::Owned(t);
                        grown += quoted.len() as isize - (end - start) as isize;
                        replaced.push((marker, number, line, column));
                        continue;
                    }
                }
                if !replaced.is_empty() {
                    // Report the numbers already located; the rest of the text is broken anyway.
                    let (_, number, line, column) = &replaced[0];
                    return Err(vec![format!(
                        "{file}: invalid JSON: the number {number} at line {line} column {column} is out of range (a number must fit in 64 bits)"
                    )]);
                }
                let inside = render(&inside);
                let at = if inside.is_empty() {
                    String::new()
                } else {
                    format!(" (inside \"{inside}\")")
                };
                let msg = if out_of_range {
                    format!(
                        "the number at line {line} column {column} is out of range (a number must fit in 64 bits)"
                    )
                } else {
                    e.to_string().replace('`', "\"")
                };
                return Err(vec![format!("{file}: invalid JSON{at}: {msg}")]);
            }
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The byte span of the number serde_json stopped in at `line`/`column` (1-based line; column
/// counted in bytes from the line's start, as serde_json does).
fn number_span(text: &str, line: usize, column: usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let line_start = if line <= 1 {
        0
    } else {
        let mut seen = 1;
        let mut at = None;
        for (i, b) in bytes.iter().enumerate() {
            if *b == b'\n' {
                seen += 1;
                if seen == line {
                    at = Some(i + 1);
                    break;
                }
            }
        }
        at?
    };
    let is_num = |b: u8| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E');
    let mut pos = (line_start + column).min(bytes.len());
    // serde_json's column may point at the number's last byte or just past it.
    while pos > line_start && !bytes.get(pos.wrapping_sub(1)).copied().is_some_and(is_num) {
        pos -= 1;
        if line_start + column - pos > 2 {
            return None;
        }
    }
    let mut start = pos;
    while start > 0 && is_num(bytes[start - 1]) {
        start -= 1;
    }
    let mut end = pos;
    while end < bytes.len() && is_num(bytes[end]) {
        end += 1;
    }
    let ok = start < end
        && text.is_char_boundary(start)
        && text.is_char_boundary(end)
        && text[start..end].parse::<f64>().is_ok();
    ok.then_some((start, end))
}

fn find_markers(
    root: &Value,
    v: &Value,
    path: &mut Vec<Seg>,
    replaced: &[(String, String, usize, usize)],
    file: &str,
    errors: &mut Vec<String>,
) {
    match v {
        Value::String(s) => {
            if let Some((_, number, line, column)) = replaced.iter().find(|r| &r.0 == s) {
                errors.push(located(
                    file,
                    root,
                    path,
                    &format!(
                        "expected a number that fits in 64 bits, got {number} (line {line}, column {column}), which is out of range"
                    ),
                ));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                find_markers(root, item, path, replaced, file, errors);
                path.pop();
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                path.push(Seg::Key(k.clone()));
                find_markers(root, item, path, replaced, file, errors);
                path.pop();
            }
        }
        _ => {}
    }
}

fn segs_of(p: &serde_path_to_error::Path) -> Vec<Seg> {
    p.iter()
        .filter_map(|s| match s {
            serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
            serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
            serde_path_to_error::Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
            serde_path_to_error::Segment::Unknown => None,
        })
        .collect()
}

/// `parallel_run_config.entry_command[0]`.
pub(super) fn render(segs: &[Seg]) -> String {
    let mut out = String::new();
    for s in segs {
        match s {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Who a path belongs to: `step "score"` (or `step #2` when it has no usable name),
/// `dataset "images"`, `compute "hpc"`, `parameter "threshold"`, or nobody (top level); and the field path
/// inside it.
pub(super) fn owner(root: &Value, path: &[Seg]) -> (Option<String>, String) {
    match path {
        [Seg::Key(k), Seg::Index(i), rest @ ..] if k == "steps" => {
            let label = root
                .get("steps")
                .and_then(|s| s.get(*i))
                .map(|s| step_label(s, *i))
                .unwrap_or_else(|| format!("step #{}", i + 1));
            (Some(label), render(rest))
        }
        [Seg::Key(k), Seg::Key(name), rest @ ..] if k == "datasets" => {
            (Some(format!("dataset {name:?}")), render(rest))
        }
        [Seg::Key(k), Seg::Key(name), rest @ ..] if k == "models" => {
            (Some(format!("model {name:?}")), render(rest))
        }
        [Seg::Key(k), Seg::Key(name), rest @ ..] if k == "compute" => {
            (Some(format!("compute {name:?}")), render(rest))
        }
        [Seg::Key(k), Seg::Key(name), rest @ ..] if k == "parameters" => {
            (Some(format!("parameter {name:?}")), render(rest))
        }
        _ => (None, render(path)),
    }
}

/// `step "NAME"`, or `step #N` (1-based) when the step has no string name.
pub(super) fn step_label(step: &Value, index: usize) -> String {
    step.get("name")
        .and_then(Value::as_str)
        .map(|n| format!("step {n:?}"))
        .unwrap_or_else(|| format!("step #{}", index + 1))
}

/// `file: step "x": field "a.b": message` (parts that are empty are left out).
pub(super) fn located(file: &str, root: &Value, path: &[Seg], message: &str) -> String {
    let (who, field) = owner(root, path);
    let mut out = file.to_string();
    if let Some(w) = who {
        out.push_str(": ");
        out.push_str(&w);
    }
    if !field.is_empty() {
        out.push_str(&format!(": field {field:?}"));
    }
    out.push_str(": ");
    out.push_str(message);
    out
}

/// The value at `path` under `root`, if there is one.
fn value_at<'a>(root: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    let mut v = root;
    for s in path {
        v = match s {
            Seg::Key(k) => v.get(k)?,
            Seg::Index(i) => v.get(*i)?,
        };
    }
    Some(v)
}

/// What a value is, in words: `5.5`, `-5`, `the string "10"`, `a list`, `null`.
pub(super) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(a) if a.is_empty() => "an empty list".into(),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// serde's name of an expected type, in words.
fn expected_words(e: &str) -> String {
    match e {
        "i64" | "i32" | "isize" => "a whole number".into(),
        "u64" | "usize" => "a whole number, 0 or more".into(),
        "u32" => "a whole number from 0 to 4294967295".into(),
        "f64" | "f32" => "a number".into(),
        "a boolean" => "true or false".into(),
        "a sequence" => "a list".into(),
        "a map" => "an object".into(),
        s if s.starts_with("struct ") => "an object".into(),
        s => s.to_string(),
    }
}

/// One problem in a spec, located: a sentence starting with the file name (then the step and
/// the field, when there are), as [`super::SpecError`] lists them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(super) struct Problem(pub(super) String);

/// Deserialize `T` from `v` (found at `base` under `root`), turning the first error into a
/// located sentence.
pub(super) fn typed<'a, T: Deserialize<'a>>(
    file: &str,
    root: &Value,
    base: &[Seg],
    v: &'a Value,
) -> Result<T, Problem> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let mut path = base.to_vec();
        path.extend(segs_of(e.path()));
        Problem(typed_message(file, root, path, &e.inner().to_string()))
    })
}

/// serde's message (`invalid type: string "10", expected i64`) in words, located.
fn typed_message(file: &str, root: &Value, mut path: Vec<Seg>, msg: &str) -> String {
    let msg = msg.replace('`', "\"");
    if let Some(rest) = msg.strip_prefix("missing field ") {
        let name = rest.trim_matches('"');
        path.push(Seg::Key(name.to_string()));
        let (who, field) = owner(root, &path);
        let who = who.map(|w| format!(": {w}")).unwrap_or_default();
        return format!("{file}{who}: missing field {field:?}");
    }
    if let Some(rest) = msg.strip_prefix("unknown field ") {
        // `"x", expected one of "a", "b"` (or `there are no fields`).
        let (name, expected) = rest.split_once(", ").unwrap_or((rest, ""));
        let name = name.trim_matches('"');
        if path.last() == Some(&Seg::Key(name.to_string())) {
            path.pop();
        }
        let (who, inside) = owner(root, &path);
        let who = who.map(|w| format!(": {w}")).unwrap_or_default();
        let inside = if inside.is_empty() {
            String::new()
        } else {
            format!(" in {inside:?}")
        };
        let expected = if expected.is_empty() {
            String::new()
        } else {
            format!(" ({expected})")
        };
        return format!("{file}{who}: unknown field {name:?}{inside}{expected}");
    }
    for prefix in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            if let Some((unexpected, expected)) = rest.rsplit_once(", expected ") {
                let got = match value_at(root, &path) {
                    // An integer beyond 64 bits reaches serde as a float.
                    Some(Value::Number(n))
                        if n.as_f64()
                            .is_some_and(|f| f.fract() == 0.0 && f.abs() >= 9.2e18) =>
                    {
                        format!("{n}, which is too large")
                    }
                    Some(v) => describe(v),
                    None => unexpected.to_string(),
                };
                return located(
                    file,
                    root,
                    &path,
                    &format!("expected {}, got {got}", expected_words(expected)),
                );
            }
        }
    }
    located(file, root, &path, &msg)
}

/// A path or a list of paths.
#[derive(Debug)]
pub(super) enum OneOrMany {
    /// `"a.csv"`
    One(String),
    /// `["a.csv", "b.csv"]`
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a path or a list of paths")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(s.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(p) = seq.next_element::<String>()? {
                    out.push(p);
                }
                Ok(OneOrMany::Many(out))
            }
        }
        d.deserialize_any(V)
    }
}
