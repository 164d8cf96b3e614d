//! The spec's top-level `models` (Azure's registered models) and the steps' `models` lists
//! that refer to them (`"iris-prs"`, or `"iris-prs:1"` naming the version).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;
use stepgraph_engine::check_model_name;
use stepgraph_engine::Model;

use super::json::{self, Problem, Seg};
use super::Context;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelSpec {
    path: String,
    #[serde(default = "first_version")]
    version: u32,
}

fn first_version() -> u32 {
    1
}

/// The models of a spec, by name.
#[derive(Default)]
pub(super) struct Models {
    declared: BTreeMap<String, Model>,
    /// Models whose declaration has an error already reported: references are not reported
    /// again.
    broken: BTreeSet<String>,
}

/// Every model of the spec into `cx.models`; a model with an error is reported and marked
/// broken.
pub(super) fn collect(
    cx: &mut Context<'_>,
    models: &BTreeMap<String, Value>,
    errors: &mut Vec<String>,
) {
    for (name, raw) in models {
        match model(cx, name, raw) {
            Ok(m) => {
                cx.models.declared.insert(name.clone(), m);
            }
            Err(e) => {
                errors.push(e.to_string());
                cx.models.broken.insert(name.clone());
            }
        }
    }
}

/// Model `name` of the spec: a valid name, a version of 1 or more, a path that exists
/// (resolved against the spec's folder).
fn model(cx: &Context<'_>, name: &str, raw: &Value) -> Result<Model, Problem> {
    let file = cx.file;
    if let Some(reason) = check_model_name(name) {
        return Err(Problem(format!(
            "{file}: model {name:?}: the name is not valid: {reason}"
        )));
    }
    let base = [Seg::Key("models".into()), Seg::Key(name.into())];
    let spec: ModelSpec = json::typed(file, cx.root, &base, raw)?;
    let at = |field: &str| {
        let mut p = base.to_vec();
        p.push(Seg::Key(field.into()));
        p
    };
    if spec.version == 0 {
        return Err(Problem(json::located(
            file,
            cx.root,
            &at("version"),
            "expected a version of 1 or more, got 0",
        )));
    }
    let path = cx.resolve(&spec.path);
    if let Err(e) = fs_err::metadata(&path) {
        // fs_err's message names the path.
        return Err(Problem(json::located(
            file,
            cx.root,
            &at("path"),
            &format!("cannot read it: {e}"),
        )));
    }
    Ok(Model::new(name, path).with_version(spec.version))
}

impl Models {
    /// The models a step's `models` field names (`name` or `name:version`); the problems go
    /// to `errors`, each naming the step and the entry.
    pub(super) fn lookup_all(
        &self,
        file: &str,
        step: &str,
        references: &[String],
        errors: &mut Vec<String>,
    ) -> Vec<Model> {
        let mut found = Vec::new();
        for (i, reference) in references.iter().enumerate() {
            let at = format!("{file}: step {step:?}: field \"models[{i}]\"");
            match self.lookup(reference) {
                Ok(Some(m)) => found.push(m),
                Ok(None) => {}
                Err(e) => errors.push(format!("{at}: {e}")),
            }
        }
        found
    }

    /// The model `reference` names; `None` for a model whose declaration was already reported.
    fn lookup(&self, reference: &str) -> Result<Option<Model>, RefError> {
        let (name, version) = match reference.split_once(':') {
            Some((name, v)) => match v.parse::<u32>() {
                Ok(n) if n >= 1 => (name, Some(n)),
                _ => {
                    return Err(RefError::BadVersion {
                        reference: reference.to_string(),
                        given: v.to_string(),
                    })
                }
            },
            None => (reference, None),
        };
        if self.broken.contains(name) {
            return Ok(None);
        }
        let Some(model) = self.declared.get(name) else {
            let known: Vec<&str> = self.declared.keys().map(String::as_str).collect();
            return Err(RefError::Unknown {
                name: name.to_string(),
                known: if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                },
            });
        };
        match version {
            Some(asked) if asked != model.version() => Err(RefError::OtherVersion {
                reference: reference.to_string(),
                name: name.to_string(),
                asked,
                declared: model.version(),
            }),
            _ => Ok(Some(model.clone())),
        }
    }
}

/// Why a step's `models` entry names no declared model (located by the caller).
#[derive(Debug, thiserror::Error)]
enum RefError {
    /// `name:version` whose version is not a whole number of 1 or more.
    #[error(
        "{reference:?}: the version after \":\" must be a whole number of 1 or more, got {given:?}"
    )]
    BadVersion { reference: String, given: String },
    /// A name the top-level `models` does not declare.
    #[error("unknown model {name:?} (declared models: {known}); declare it in the top-level \"models\": {{\"{name}\": {{\"path\": \"...\"}}}}")]
    Unknown { name: String, known: String },
    /// A version other than the declared one.
    #[error("{reference:?} asks for version {asked} of model {name:?}, but the top-level \"models\" declares version {declared}")]
    OtherVersion {
        reference: String,
        name: String,
        asked: u32,
        declared: u32,
    },
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::parse_spec;

    /// A spec with models `iris-prs` (a file, version 1) and `bert` (a folder, version 3),
    /// a parallel_run step and a command step reading `models` (the step field).
    fn spec(
        dir: &std::path::Path,
        models: serde_json::Value,
        step_models: serde_json::Value,
    ) -> Result<String, String> {
        fs_err::create_dir_all(dir.join("models/bert")).map_err(|e| e.to_string())?;
        fs_err::create_dir_all(dir.join("scripts")).map_err(|e| e.to_string())?;
        for f in [
            "models/iris.pkl",
            "models/bert/config.json",
            "scripts/score.py",
        ] {
            fs_err::write(dir.join(f), "x").map_err(|e| e.to_string())?;
        }
        let spec = json!({
            "name": "models",
            "datasets": {"docs": {"type": "file", "path": "."}},
            "models": models,
            "steps": [
                {"name": "score", "type": "parallel_run", "inputs": ["docs"], "output": "scores",
                 "models": step_models,
                 "parallel_run_config": {"source_directory": "scripts", "entry_script": "score.py",
                   "error_threshold": 0}},
                {"name": "report", "type": "command", "command": ["true"],
                 "inputs": {"scores": "scores"}, "models": ["bert"]}
            ]
        });
        match parse_spec(&spec.to_string(), "pipeline.json", dir) {
            Ok(_) => Ok(String::new()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn usual() -> serde_json::Value {
        json!({
            "iris-prs": {"path": "models/iris.pkl"},
            "bert": {"path": "models/bert", "version": 3}
        })
    }

    #[test]
    fn steps_read_declared_models_by_name_or_name_and_version() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        spec(dir.path(), usual(), json!(["iris-prs"]))?;
        spec(dir.path(), usual(), json!(["iris-prs:1", "bert:3"]))?;
        Ok(())
    }

    #[test]
    fn model_errors_name_the_file_the_owner_and_the_field() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let cases = [
            (
                usual(),
                json!(["resnet"]),
                r#"pipeline.json: step "score": field "models[0]": unknown model "resnet" (declared models: bert, iris-prs); declare it in the top-level "models""#,
            ),
            (
                usual(),
                json!(["iris-prs:2"]),
                r#"pipeline.json: step "score": field "models[0]": "iris-prs:2" asks for version 2 of model "iris-prs", but the top-level "models" declares version 1"#,
            ),
            (
                usual(),
                json!(["iris-prs:latest"]),
                r#"pipeline.json: step "score": field "models[0]": "iris-prs:latest": the version after ":" must be a whole number of 1 or more, got "latest""#,
            ),
            (
                json!({"iris-prs": {"path": "models/iris.pkl", "version": 0}, "bert": {"path": "models/bert"}}),
                json!(["iris-prs"]),
                r#"pipeline.json: model "iris-prs": field "version": expected a version of 1 or more, got 0"#,
            ),
            (
                json!({"iris-prs": {"path": "models/iris.pkl", "version": "1"}, "bert": {"path": "models/bert"}}),
                json!(["iris-prs"]),
                r#"pipeline.json: model "iris-prs": field "version": expected a whole number"#,
            ),
            (
                json!({"iris-prs": {"version": 1}, "bert": {"path": "models/bert"}}),
                json!(["iris-prs"]),
                r#"pipeline.json: model "iris-prs": missing field "path""#,
            ),
            (
                json!({"iris-prs": {"path": "models/missing.pkl"}, "bert": {"path": "models/bert"}}),
                json!(["iris-prs"]),
                r#"pipeline.json: model "iris-prs": field "path": cannot read "#,
            ),
            (
                json!({"iris/prs": {"path": "models/iris.pkl"}, "bert": {"path": "models/bert"}}),
                json!([]),
                r#"pipeline.json: model "iris/prs": the name is not valid: may contain only letters, digits, dashes, underscores and dots"#,
            ),
            (
                json!({"iris-prs": {"path": "models/iris.pkl", "framework": "sklearn"}, "bert": {"path": "models/bert"}}),
                json!(["iris-prs"]),
                r#"pipeline.json: model "iris-prs": unknown field "framework""#,
            ),
        ];
        for (models, step_models, expected) in cases {
            let err = match spec(dir.path(), models, step_models.clone()) {
                Ok(_) => return Err(format!("accepted: {step_models}, expected {expected}")),
                Err(e) => e,
            };
            assert!(err.contains(expected), "{err}\n  expected: {expected}");
            // A model whose declaration is wrong is reported once, not again by its readers.
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        Ok(())
    }
}
