//! `{inputs.NAME}`, `{outputs.NAME}` and `{params.NAME}` placeholders in command strings.

/// One placeholder found in a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placeholder {
    /// `inputs`, `outputs` or `params`.
    pub(crate) namespace: String,
    /// The name after the dot.
    pub(crate) name: String,
}

/// The placeholders of `s`, in order. Braces that do not form a placeholder are left alone.
pub(crate) fn find(s: &str) -> Vec<Placeholder> {
    let mut out = Vec::new();
    substitute(s, |ns, name| {
        out.push(Placeholder {
            namespace: ns.to_string(),
            name: name.to_string(),
        });
        None
    });
    out
}

/// Replace each placeholder for which `f` returns a value; keep the others verbatim.
pub(crate) fn substitute(s: &str, mut f: impl FnMut(&str, &str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let parsed = after.find('}').and_then(|close| {
            let inner = &after[..close];
            let (ns, name) = inner.split_once('.')?;
            let ok_ns = matches!(ns, "inputs" | "outputs" | "params");
            let ok_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            (ok_ns && ok_name).then_some((ns, name, close))
        });
        match parsed {
            Some((ns, name, close)) => {
                match f(ns, name) {
                    Some(v) => out.push_str(&v),
                    None => out.push_str(&rest[open..open + close + 2]),
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_substitutes_only_real_placeholders() {
        let s = "x={inputs.scores} y={outputs.report} {params.t} {other} {inputs.}";
        let names: Vec<_> = find(s)
            .into_iter()
            .map(|p| format!("{}.{}", p.namespace, p.name))
            .collect();
        assert_eq!(names, ["inputs.scores", "outputs.report", "params.t"]);
        let r = substitute(s, |ns, n| Some(format!("<{ns}:{n}>")));
        assert_eq!(
            r,
            "x=<inputs:scores> y=<outputs:report> <params:t> {other} {inputs.}"
        );
    }

    proptest::proptest! {
        #[test]
        fn substitute_never_panics_and_is_identity_without_values(s in ".*") {
            proptest::prop_assert_eq!(substitute(&s, |_, _| None), s);
        }
    }
}
