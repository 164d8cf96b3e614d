//! Models a step declares ([`Model`]), as the step's processes see them: laid out read-only
//! under `AZUREML_MODEL_DIR` as Azure lays them out, and described to the `azureml` shim
//! (`steps/python/azureml`) by environment variables. The names of those variables are the
//! shim's contract (`azureml/_shim.py`); the README lists them ("Coming from Azure ML").

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::json;
use stepgraph_engine::{BuildError, ErrorContext, Model, ResolvedModel, StepError};

/// The step's name, for the shim's messages.
pub(crate) const STEP_NAME_VAR: &str = "STEPGRAPH_STEP_NAME";
/// JSON `{name: {"version": n, "path": ...}}` of the declared models.
pub(crate) const MODELS_VAR: &str = "STEPGRAPH_MODELS";
/// Azure's folder of models: `<name>/<version>/<file or folder>`.
pub(crate) const MODEL_DIR_VAR: &str = "AZUREML_MODEL_DIR";
/// The JSON Lines file `Run.get_context().log(..)` appends to.
pub(crate) const METRICS_VAR: &str = "STEPGRAPH_METRICS_FILE";
/// JSON `{name: path}` of the step's named inputs (`Run.get_context().input_datasets`).
pub(crate) const INPUTS_VAR: &str = "STEPGRAPH_INPUT_DATASETS";

/// Check the models a step declares: valid names and versions, each name once.
///
/// # Errors
/// [`BuildError::InvalidConfig`] on field `models`, naming the model.
pub(crate) fn check(step: &str, models: &[Model]) -> Result<(), BuildError> {
    let invalid = |message: String| BuildError::InvalidConfig {
        step: step.to_string(),
        field: "models".into(),
        message,
    };
    let mut seen = BTreeMap::new();
    for m in models {
        if let Some(problem) = m.check() {
            return Err(invalid(problem));
        }
        if let Some(other) = seen.insert(m.name(), m.version()) {
            return Err(invalid(format!(
                "model {:?} is declared twice (versions {other} and {}); a step reads one version of a model",
                m.name(),
                m.version()
            )));
        }
    }
    Ok(())
}

/// The environment the shim reads, for a step `step` whose metrics go to `metrics_file`, with its
/// models laid out under `<work_dir>/azureml-models` and its named inputs `inputs`.
///
/// # Errors
/// A [`StepError`] naming the model file that could not be copied.
pub(crate) fn environment(
    step: &str,
    metrics_file: &Path,
    work_dir: &Path,
    models: &BTreeMap<String, ResolvedModel>,
    inputs: &BTreeMap<String, PathBuf>,
) -> Result<BTreeMap<OsString, OsString>, StepError> {
    let mut env = BTreeMap::new();
    env.insert(STEP_NAME_VAR.into(), step.into());
    env.insert(METRICS_VAR.into(), metrics_file.as_os_str().to_os_string());
    let named: serde_json::Map<String, serde_json::Value> = inputs
        .iter()
        .map(|(k, v)| (k.clone(), json!(v.to_string_lossy())))
        .collect();
    env.insert(
        INPUTS_VAR.into(),
        serde_json::Value::Object(named).to_string().into(),
    );
    let model_dir = work_dir.join("azureml-models");
    // A layout from an earlier try goes: its files are read-only, its folders are not, so it
    // can be removed.
    if model_dir.symlink_metadata().is_ok() {
        fs_err::remove_dir_all(&model_dir)?;
    }
    fs_err::create_dir_all(&model_dir)?;
    let mut declared = serde_json::Map::new();
    for (name, model) in models {
        let path = model
            .materialise(&model_dir)
            .with_context(|| format!("model {name}"))?;
        declared.insert(
            name.clone(),
            json!({"version": model.version, "path": path.to_string_lossy()}),
        );
    }
    env.insert(
        MODELS_VAR.into(),
        serde_json::Value::Object(declared).to_string().into(),
    );
    env.insert(MODEL_DIR_VAR.into(), model_dir.into_os_string());
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn models_are_laid_out_read_only_as_azure_does() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("iris.pkl");
        fs_err::write(&file, "pickle")?;
        let folder = dir.path().join("bert-base");
        fs_err::create_dir_all(folder.join("vocab"))?;
        fs_err::write(folder.join("config.json"), "{}")?;
        fs_err::write(folder.join("vocab/words.txt"), "a b")?;
        let mut models = BTreeMap::new();
        for m in [
            Model::new("iris-prs", &file),
            Model::new("bert", &folder).with_version(3),
        ] {
            let files = m.list()?;
            models.insert(
                m.name().to_string(),
                ResolvedModel {
                    name: m.name().to_string(),
                    version: m.version(),
                    files,
                },
            );
        }
        let work = dir.path().join("work");
        let inputs = BTreeMap::from([("docs".to_string(), PathBuf::from("/data/docs"))]);
        // Twice: a second try lays the models out again over the read-only first copy.
        let mut env = BTreeMap::new();
        for _ in 0..2 {
            env = environment(
                "score",
                &dir.path().join("metrics.jsonl"),
                &work,
                &models,
                &inputs,
            )?;
        }
        let var = |k: &str| env[&OsString::from(k)].to_string_lossy().into_owned();
        let root = work.join("azureml-models");
        assert_eq!(var(MODEL_DIR_VAR), root.to_string_lossy());
        let iris = root.join("iris-prs/1/iris.pkl");
        let bert = root.join("bert/3/bert-base");
        let declared: serde_json::Value = serde_json::from_str(&var(MODELS_VAR))?;
        assert_eq!(
            declared,
            json!({
                "iris-prs": {"version": 1, "path": iris.to_string_lossy()},
                "bert": {"version": 3, "path": bert.to_string_lossy()},
            })
        );
        assert_eq!(fs_err::read_to_string(&iris)?, "pickle");
        assert_eq!(fs_err::read_to_string(bert.join("vocab/words.txt"))?, "a b");
        for f in [&iris, &bert.join("config.json")] {
            assert_eq!(
                fs_err::metadata(f)?.permissions().mode() & 0o222,
                0,
                "{f:?}"
            );
        }
        // The user's files are untouched (copies, not links).
        assert_ne!(fs_err::metadata(&file)?.permissions().mode() & 0o200, 0);
        assert_eq!(var(STEP_NAME_VAR), "score");
        assert_eq!(
            var(METRICS_VAR),
            dir.path().join("metrics.jsonl").to_string_lossy()
        );
        assert_eq!(var(INPUTS_VAR), r#"{"docs":"/data/docs"}"#);
        Ok(())
    }

    #[test]
    fn a_model_is_declared_once_with_a_valid_name_and_version() {
        let m = |name: &str, v: u32| Model::new(name, "m.pkl").with_version(v);
        assert!(check("s", &[m("a", 1), m("b", 2)]).is_ok());
        for (models, expected) in [
            (vec![m("a", 1), m("a", 2)], "declared twice"),
            (vec![m("a/b", 1)], "model name \"a/b\""),
            (vec![m("a", 0)], "version must be 1 or more"),
        ] {
            let err = check("s", &models)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(expected), "{err}");
        }
    }
}
