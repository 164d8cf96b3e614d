//! The spec's top-level `compute` (named compute targets, Azure's compute targets) and the
//! steps' `compute` field that names one (`"compute": "hpc"`; `"local"` unless declared
//! otherwise is this machine).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

use super::json::{self, Problem, Seg};
use super::Context;
use crate::Compute;

/// A Slurm target's settings in the spec (`"type": "slurm"` taken off).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlurmSpec {
    partition: Option<String>,
    account: Option<String>,
    time: Option<String>,
    cpus_per_task: Option<u32>,
    mem: Option<String>,
    #[serde(default)]
    extra_args: Vec<String>,
    bind: Option<String>,
}

/// A local target has no settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalSpec {}

/// The compute targets of a spec, by name.
#[derive(Default)]
pub(super) struct Computes {
    declared: BTreeMap<String, Compute>,
    /// Targets whose declaration has an error already reported: references are not reported
    /// again.
    broken: BTreeSet<String>,
}

/// Every compute target of the spec into `cx.computes`; a target with an error is reported
/// and marked broken.
pub(super) fn collect(
    cx: &mut Context<'_>,
    computes: &BTreeMap<String, Value>,
    errors: &mut Vec<String>,
) {
    for (name, raw) in computes {
        match compute(cx, name, raw) {
            Ok(c) => {
                cx.computes.declared.insert(name.clone(), c);
            }
            Err(e) => {
                errors.push(e.to_string());
                cx.computes.broken.insert(name.clone());
            }
        }
    }
}

/// Compute target `name` of the spec: `{"type": "slurm", ...}` with valid settings, or
/// `{"type": "local"}`.
fn compute(cx: &Context<'_>, name: &str, raw: &Value) -> Result<Compute, Problem> {
    let file = cx.file;
    let base = [Seg::Key("compute".into()), Seg::Key(name.into())];
    if name.is_empty() {
        return Err(Problem(format!(
            "{file}: compute \"\": the name must not be empty"
        )));
    }
    let (kind, rest) = super::tagged(
        file,
        cx.root,
        &base,
        raw,
        &["slurm", "local"],
        r#"{"type": "slurm", "partition": "debug", "time": "01:00:00"}"#,
    )?;
    if kind == 1 {
        json::typed::<LocalSpec>(file, cx.root, &base, &rest)?;
        return Ok(Compute::Local);
    }
    let s: SlurmSpec = json::typed(file, cx.root, &base, &rest)?;
    let mut c = Compute::slurm(name).extra_args(s.extra_args);
    c.partition = s.partition;
    c.account = s.account;
    c.time = s.time;
    c.cpus_per_task = s.cpus_per_task;
    c.mem = s.mem;
    c.bind = s.bind;
    c.check().map_err(|e| {
        let mut at = base.to_vec();
        // `extra_args[1]` is the list's field and its index.
        match e.field.split_once('[') {
            Some((field, index)) => {
                at.push(Seg::Key(field.into()));
                if let Ok(i) = index.trim_end_matches(']').parse() {
                    at.push(Seg::Index(i));
                }
            }
            None => at.push(Seg::Key(e.field.clone())),
        }
        Problem(json::located(file, cx.root, &at, &e.message))
    })?;
    Ok(Compute::Slurm(c))
}

impl Computes {
    /// The target a step's `compute` field names; a problem goes to `errors`, naming the step
    /// and the field. `None` when there is nothing to set (no field, or a target whose
    /// declaration was already reported).
    pub(super) fn lookup(
        &self,
        file: &str,
        step: &str,
        reference: Option<&str>,
        errors: &mut Vec<String>,
    ) -> Option<Compute> {
        let reference = reference?;
        if self.broken.contains(reference) {
            return None;
        }
        if let Some(c) = self.declared.get(reference) {
            return Some(c.clone());
        }
        if reference == "local" {
            return Some(Compute::Local);
        }
        let known: Vec<&str> = self.declared.keys().map(String::as_str).collect();
        let known = if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        };
        errors.push(format!(
            "{file}: step {step:?}: field \"compute\": unknown compute {reference:?} \
             (declared compute: {known}; \"local\" is this machine); declare it in the \
             top-level \"compute\": {{\"{reference}\": {{\"type\": \"slurm\", \"partition\": \"...\"}}}}"
        ));
        None
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use stepgraph_engine::Pipeline;

    use crate::{parse_spec, Compute};

    /// A spec with compute targets `computes`, a command step and a parallel_run step each
    /// naming `step_compute` (when not null).
    fn spec(
        dir: &std::path::Path,
        computes: serde_json::Value,
        step_compute: serde_json::Value,
    ) -> Result<Pipeline, String> {
        fs_err::create_dir_all(dir.join("scripts")).map_err(|e| e.to_string())?;
        fs_err::write(dir.join("scripts/score.py"), "x").map_err(|e| e.to_string())?;
        let mut spec = json!({
            "name": "compute",
            "datasets": {"docs": {"type": "file", "path": "."}},
            "compute": computes,
            "steps": [
                {"name": "score", "type": "parallel_run", "inputs": ["docs"], "output": "scores",
                 "parallel_run_config": {"source_directory": "scripts", "entry_script": "score.py",
                   "error_threshold": 0}},
                {"name": "report", "type": "command", "command": ["true"],
                 "inputs": {"scores": "scores"}}
            ]
        });
        if !step_compute.is_null() {
            spec["steps"][0]["compute"] = step_compute.clone();
            spec["steps"][1]["compute"] = step_compute;
        }
        parse_spec(&spec.to_string(), "pipeline.json", dir).map_err(|e| e.to_string())
    }

    fn hpc() -> serde_json::Value {
        json!({"hpc": {"type": "slurm", "partition": "debug", "account": null,
                       "time": "01:00:00", "cpus_per_task": 2, "mem": "4G", "extra_args": []}})
    }

    fn compute_of(p: &Pipeline, step: &str) -> Compute {
        let node = p.node(p.node_index(step).expect("the step"));
        Compute::from_declared(node.module_def.compute.as_ref())
    }

    #[test]
    fn steps_run_on_the_compute_they_name() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let p = spec(dir.path(), hpc(), json!("hpc"))?;
        let expected = Compute::from(
            Compute::slurm("hpc")
                .partition("debug")
                .time("01:00:00")
                .cpus_per_task(2)
                .mem("4G"),
        );
        assert_eq!(compute_of(&p, "score"), expected);
        assert_eq!(compute_of(&p, "report"), expected);
        // No field, or "local": this machine.
        for c in [json!(null), json!("local")] {
            let p = spec(dir.path(), hpc(), c)?;
            assert_eq!(compute_of(&p, "score"), Compute::Local);
            assert_eq!(compute_of(&p, "report"), Compute::Local);
        }
        // A target may be declared local, and a Slurm one needs no settings.
        let p = spec(
            dir.path(),
            json!({"here": {"type": "local"}, "any": {"type": "slurm"}}),
            json!("here"),
        )?;
        assert_eq!(compute_of(&p, "report"), Compute::Local);
        let p = spec(dir.path(), json!({"any": {"type": "slurm"}}), json!("any"))?;
        assert_eq!(
            compute_of(&p, "report"),
            Compute::from(Compute::slurm("any"))
        );
        Ok(())
    }

    #[test]
    fn compute_errors_name_the_file_the_owner_and_the_field() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let cases = [
            (
                hpc(),
                json!("gpu"),
                r#"pipeline.json: step "score": field "compute": unknown compute "gpu" (declared compute: hpc; "local" is this machine); declare it in the top-level "compute""#,
            ),
            (
                json!({}),
                json!("hpc"),
                r#"pipeline.json: step "score": field "compute": unknown compute "hpc" (declared compute: none;"#,
            ),
            (
                json!({"hpc": {"type": "slurm", "time": "1h"}}),
                json!("hpc"),
                r#"pipeline.json: compute "hpc": field "time": "1h": expected minutes, minutes:seconds"#,
            ),
            (
                json!({"hpc": {"type": "slurm", "mem": "4GB"}}),
                json!("hpc"),
                r#"pipeline.json: compute "hpc": field "mem": "4GB": expected a whole number with an optional unit"#,
            ),
            (
                json!({"hpc": {"type": "slurm", "partition": ""}}),
                json!("hpc"),
                r#"pipeline.json: compute "hpc": field "partition": must not be empty"#,
            ),
            (
                json!({"hpc": {"type": "slurm", "cpus_per_task": 0}}),
                json!("hpc"),
                r#"pipeline.json: compute "hpc": field "cpus_per_task": must be 1 or more, got 0"#,
            ),
            (
                json!({"hpc": {"type": "slurm", "extra_args": ["--qos=x", "--output=o.txt"]}}),
                json!("hpc"),
                r#"pipeline.json: compute "hpc": field "extra_args[1]": "--output=o.txt": stepgraph sets --output itself"#,
            ),
            (
                json!({"hpc": {"type": "slurm", "nodes": 2}}),
                json!("hpc"),
                r#"pipeline.json: compute "hpc": unknown field "nodes""#,
            ),
            (
                json!({"hpc": {"type": "kubernetes"}}),
                json!("hpc"),
                r#"pipeline.json: compute "hpc": field "type": expected "slurm" or "local", got the string "kubernetes""#,
            ),
            (
                json!({"hpc": {"partition": "debug"}}),
                json!("hpc"),
                r#"pipeline.json: compute "hpc": missing field "type" (expected "slurm" or "local")"#,
            ),
            (
                json!({"hpc": {"type": "slurm", "cpus_per_task": "2"}}),
                json!("hpc"),
                r#"pipeline.json: compute "hpc": field "cpus_per_task": expected a whole number"#,
            ),
            (
                hpc(),
                json!(["hpc"]),
                r#"pipeline.json: step "score": field "compute": expected a string"#,
            ),
        ];
        for (computes, step_compute, expected) in cases {
            let err = match spec(dir.path(), computes.clone(), step_compute.clone()) {
                Ok(_) => return Err(format!("accepted: {computes} {step_compute}")),
                Err(e) => e,
            };
            assert!(err.contains(expected), "{err}\n  expected: {expected}");
        }
        Ok(())
    }

    #[test]
    fn a_broken_target_is_reported_once_not_again_by_its_steps() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let err = spec(
            dir.path(),
            json!({"hpc": {"type": "slurm", "time": "soon"}}),
            json!("hpc"),
        )
        .err()
        .ok_or("accepted")?;
        assert_eq!(err.lines().count(), 1, "{err}");
        Ok(())
    }
}
