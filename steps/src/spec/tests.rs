//! Unit tests of the spec parser: messages name the file, the owner and the field.

// Tests use std::fs directly; the library uses fs_err (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use super::*;

const GOOD: &str = r#"{
      "name": "batch-scoring",
      "parameters": {"threshold": 0.5},
      "datasets": {"images": {"type": "file", "path": "data", "pattern": "**/*.txt"}},
      "steps": [
        {"name": "score-images", "type": "parallel_run", "inputs": ["images"], "output": "scores",
         "arguments": ["--threshold", "{params.threshold}"],
         "parallel_run_config": {"source_directory": "scripts", "entry_script": "score.py",
           "mini_batch_size": "5", "error_threshold": 10, "output_action": "append_row",
           "process_count_per_node": 2, "node_count": 1, "run_invocation_timeout": 60, "run_max_try": 3}},
        {"name": "summarize", "type": "command",
         "command": ["python3", "summarize.py", "{inputs.scores}", "{outputs.report}"],
         "source_directory": "scripts", "inputs": {"scores": "scores"}, "outputs": ["report"]}
      ]
    }"#;

fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("scripts")).expect("mkdir");
    std::fs::create_dir_all(dir.path().join("data")).expect("mkdir");
    std::fs::write(
        dir.path().join("scripts/score.py"),
        "def run(b): return b\n",
    )
    .expect("write");
    dir
}

fn err_of(text: &str) -> String {
    let dir = fixture();
    match parse_spec(text, "pipeline.json", dir.path()) {
        Ok(_) => "ok".into(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_endless_spec_file_is_refused_without_reading_it_all() {
    let err = match load_spec(Path::new("/dev/zero")) {
        Ok(_) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    assert_eq!(
        err,
        "/dev/zero: the spec is larger than 16777216 bytes; a pipeline spec is a small JSON file"
    );
}

#[test]
fn an_unreadable_spec_file_is_named_once() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("missing.json");
    let err = match load_spec(&path) {
        Ok(_) => return Err("a missing spec loaded".into()),
        Err(e) => e.to_string(),
    };
    let named = path.display().to_string();
    assert!(err.starts_with(&format!("{named}: cannot read: ")), "{err}");
    assert_eq!(err.matches(&named).count(), 1, "{err}");
    Ok(())
}

#[test]
fn names_that_would_be_paths_are_refused_naming_the_field() {
    let spec = r#"{"name": "attack",
          "datasets": {"../d": {"type": "file", "path": "data"}},
          "steps": [
            {"name": "copy", "type": "command", "command": ["true"],
             "inputs": {"a/b": "../d"}, "outputs": ["copied", "/home/someone/victim", "../x"]},
            {"name": "score", "type": "parallel_run", "inputs": ["../d"], "output": "..",
             "parallel_run_config": {"source_directory": "scripts", "entry_script": "score.py",
               "error_threshold": 0}}]}"#;
    let err = err_of(spec);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
            lines,
            [
                "pipeline.json: dataset \"../d\": the name is not valid: may contain only lowercase letters, digits, underscores and dashes (no path separators or dots)",
                "pipeline.json: step \"copy\": field \"outputs[1]\": \"/home/someone/victim\" is not a valid name: may contain only lowercase letters, digits, underscores and dashes (no path separators or dots)",
                "pipeline.json: step \"copy\": field \"outputs[2]\": \"../x\" is not a valid name: may contain only lowercase letters, digits, underscores and dashes (no path separators or dots)",
                "pipeline.json: step \"copy\": field \"inputs\": \"a/b\" is not a valid name: may contain only lowercase letters, digits, underscores and dashes (no path separators or dots)",
                "pipeline.json: step \"score\": field \"output\": \"..\" is not a valid name: may contain only lowercase letters, digits, underscores and dashes (no path separators or dots)",
            ],
            "{err}"
        );
}

#[test]
fn the_design_example_parses() {
    assert_eq!(err_of(GOOD), "ok");
}

#[test]
fn unknown_field_names_file_step_and_field() {
    let bad = GOOD.replace("\"mini_batch_size\"", "\"mini_batchsize\"");
    let e = err_of(&bad);
    assert!(
            e.starts_with("pipeline.json: step \"score-images\": unknown field \"mini_batchsize\" in \"parallel_run_config\" (expected one of \"source_directory\", "),
            "{e}"
        );
}

#[test]
fn errors_name_what_is_wrong() {
    let cases = [
        (
            GOOD.replace("\"inputs\": [\"images\"]", "\"inputs\": [\"imagez\"]"),
            "unknown data \"imagez\"",
        ),
        (
            GOOD.replace("\"error_threshold\": 10,", ""),
            "error_threshold",
        ),
        (
            GOOD.replace("\"error_threshold\": 10", "\"error_threshold\": \"ten\""),
            "expected a whole number, got the string \"ten\"",
        ),
        (
            GOOD.replace("{params.threshold}", "{params.thresh}"),
            "unknown parameter \"thresh\"",
        ),
        (GOOD.replace("\"run_after\": []", ""), "ok"),
        (
            GOOD.replace("\"summarize\"", "\"Summarize\""),
            "invalid step name",
        ),
        (
            GOOD.replace("\"type\": \"command\"", "\"type\": \"shell\""),
            "field \"type\": expected \"parallel_run\" or \"command\", got the string \"shell\"",
        ),
        (
            GOOD.replace("{inputs.scores}", "{inputs.score}"),
            "unknown input \"score\"",
        ),
        ("{\"name\": 1".to_string(), "pipeline.json: "),
        ("[]".to_string(), "must be a JSON object"),
    ];
    for (text, want) in cases {
        let e = err_of(&text);
        assert!(e.contains(want), "want {want:?} in {e:?}");
        assert!(e == "ok" || e.starts_with("pipeline.json: "), "{e}");
    }
}

/// Each bad spec gives exactly one sentence naming the file, the step (or dataset, or
/// parameter) and the field, what was expected and what was found.
#[test]
fn type_errors_name_file_step_field_and_expectation() {
    let prc = "pipeline.json: step \"score-images\": field \"parallel_run_config.";
    let cases: Vec<(String, String)> = vec![
            (
                GOOD.replace("\"mini_batch_size\": \"5\"", "\"mini_batch_size\": 5.5"),
                format!("{prc}mini_batch_size\": expected a whole number of files or a size like \"10MB\", got 5.5"),
            ),
            (
                GOOD.replace("\"mini_batch_size\": \"5\"", "\"mini_batch_size\": -5"),
                format!("{prc}mini_batch_size\": expected a whole number of files or a size like \"10MB\", got -5"),
            ),
            (
                GOOD.replace("\"mini_batch_size\": \"5\"", "\"mini_batch_size\": true"),
                format!("{prc}mini_batch_size\": expected a whole number of files or a size like \"10MB\", got true"),
            ),
            (
                GOOD.replace("\"mini_batch_size\": \"5\"", "\"mini_batch_size\": 0"),
                format!("{prc}mini_batch_size\": must be greater than 0"),
            ),
            (
                GOOD.replace("\"error_threshold\": 10", "\"error_threshold\": \"10\""),
                format!("{prc}error_threshold\": expected a whole number, got the string \"10\""),
            ),
            (
                GOOD.replace("\"error_threshold\": 10", "\"error_threshold\": 10.5"),
                format!("{prc}error_threshold\": expected a whole number, got 10.5"),
            ),
            (
                GOOD.replace("\"error_threshold\": 10", "\"error_threshold\": null"),
                format!("{prc}error_threshold\": is required (-1 for no limit)"),
            ),
            (
                GOOD.replace("\"error_threshold\": 10", "\"error_threshold\": 1e309"),
                format!("{prc}error_threshold\": expected a number that fits in 64 bits, got 1e309 (line 9, column 55), which is out of range"),
            ),
            (
                GOOD.replace("\"error_threshold\": 10", "\"error_threshold\": 1e999999999999"),
                format!("{prc}error_threshold\": expected a number that fits in 64 bits, got 1e999999999999 (line 9, column 55), which is out of range"),
            ),
            (
                GOOD.replace("\"run_max_try\": 3", "\"run_max_try\": 99999999999999999999"),
                format!("{prc}run_max_try\": expected a whole number, got 1e+20, which is too large"),
            ),
            (
                GOOD.replace("\"process_count_per_node\": 2", "\"process_count_per_node\": -2"),
                format!("{prc}process_count_per_node\": expected a whole number from 0 to 4294967295, got -2"),
            ),
            (
                GOOD.replace("\"node_count\": 1", "\"node_count\": [1]"),
                format!("{prc}node_count\": expected a whole number from 0 to 4294967295, got a list"),
            ),
            (
                GOOD.replace("\"error_threshold\": 10,", "\"allowed_failed_percent\": \"5%\", \"error_threshold\": 10,"),
                format!("{prc}allowed_failed_percent\": expected a number, got the string \"5%\""),
            ),
            (
                GOOD.replace("\"output_action\": \"append_row\"", "\"output_action\": 1"),
                format!("{prc}output_action\": expected a string, got 1"),
            ),
            (
                GOOD.replace("\"entry_script\": \"score.py\"", "\"entry_command\": \"score.py\""),
                format!("{prc}entry_command\": expected a list, got the string \"score.py\""),
            ),
            (
                GOOD.replace("\"entry_script\": \"score.py\"", "\"entry_command\": [\"python3\", 3]"),
                format!("{prc}entry_command[1]\": expected a string, got 3"),
            ),
            (
                GOOD.replace("\"error_threshold\": 10,", "\"environment_variables\": {\"A\": 1}, \"error_threshold\": 10,"),
                format!("{prc}environment_variables.A\": expected a string, got 1"),
            ),
            (
                GOOD.replace("\"parallel_run_config\": {", "\"parallel_run_config\": 5, \"x\": {"),
                "pipeline.json: step \"score-images\": field \"parallel_run_config\": expected an object, got 5".into(),
            ),
            (
                GOOD.replace("\"inputs\": [\"images\"]", "\"inputs\": \"images\""),
                "pipeline.json: step \"score-images\": field \"inputs\": expected a list, got the string \"images\"".into(),
            ),
            (
                GOOD.replace("\"output\": \"scores\"", "\"output\": [\"scores\"]"),
                "pipeline.json: step \"score-images\": field \"output\": expected a string, got a list".into(),
            ),
            (
                GOOD.replace("\"inputs\": [\"images\"],", "\"inputs\": [\"images\"], \"allow_reuse\": \"yes\","),
                "pipeline.json: step \"score-images\": field \"allow_reuse\": expected true or false, got the string \"yes\"".into(),
            ),
            (
                GOOD.replace("\"--threshold\", ", "\"--threshold\", 0.5, "),
                "pipeline.json: step \"score-images\": field \"arguments[1]\": expected a string, got 0.5".into(),
            ),
            (
                GOOD.replace("\"inputs\": {\"scores\": \"scores\"}", "\"inputs\": {\"scores\": 1}"),
                "pipeline.json: step \"summarize\": field \"inputs.scores\": expected a string, got 1".into(),
            ),
            (
                GOOD.replace("\"outputs\": [\"report\"]", "\"outputs\": [\"report\", 3]"),
                "pipeline.json: step \"summarize\": field \"outputs[1]\": expected a string, got 3".into(),
            ),
            (
                GOOD.replace("\"command\": [\"python3\"", "\"command\": [false"),
                "pipeline.json: step \"summarize\": field \"command[0]\": expected a string, got false".into(),
            ),
            (
                GOOD.replace("\"name\": \"summarize\", ", ""),
                "pipeline.json: step #2: missing field \"name\"".into(),
            ),
            (
                GOOD.replace("\"name\": \"summarize\"", "\"name\": 2"),
                "pipeline.json: step #2: field \"name\": expected a string, got 2".into(),
            ),
            (
                GOOD.replace("\"type\": \"command\",", ""),
                "pipeline.json: step \"summarize\": missing field \"type\" (expected \"parallel_run\" or \"command\")".into(),
            ),
            (
                GOOD.replace("\"steps\": [", "\"steps\": [\"x\", "),
                "pipeline.json: step #1: expected an object like {\"name\": \"my-step\", \"type\": \"command\", \"command\": [\"true\"]}, got the string \"x\"".into(),
            ),
            (
                GOOD.replace("\"pattern\"", "\"patern\""),
                "pipeline.json: dataset \"images\": unknown field \"patern\" (expected one of \"path\", \"pattern\", \"partition_format\")".into(),
            ),
            (
                GOOD.replace("\"pattern\": \"**/*.txt\"", "\"partition_format\": \"{user/{genre}.wav\""),
                "pipeline.json: dataset \"images\": field \"partition_format\": a '{' inside a field".into(),
            ),
            (
                GOOD.replace("\"path\": \"data\"", "\"path\": 7"),
                "pipeline.json: dataset \"images\": field \"path\": expected a string, got 7".into(),
            ),
            (
                GOOD.replace("\"type\": \"file\"", "\"type\": \"files\""),
                "pipeline.json: dataset \"images\": field \"type\": expected \"file\", \"tabular\" or \"reference\", got the string \"files\"".into(),
            ),
            (
                GOOD.replace("\"type\": \"file\", \"path\": \"data\", \"pattern\": \"**/*.txt\"", "\"type\": \"tabular\", \"path\": [\"a.csv\", 2]"),
                "pipeline.json: dataset \"images\": field \"path[1]\": expected a string, got 2".into(),
            ),
            (
                GOOD.replace("\"type\": \"file\", \"path\": \"data\", \"pattern\": \"**/*.txt\"", "\"type\": \"tabular\", \"path\": {}"),
                "pipeline.json: dataset \"images\": field \"path\": expected a path or a list of paths, got an object".into(),
            ),
            (
                GOOD.replace("\"type\": \"file\", \"path\": \"data\", \"pattern\": \"**/*.txt\"", "\"type\": \"tabular\", \"path\": \"a.csv\", \"format\": \"xls\""),
                "pipeline.json: dataset \"images\": field \"format\": expected \"csv\" or \"jsonl\", got the string \"xls\"".into(),
            ),
            (
                GOOD.replace("\"datasets\": {", "\"datasets\": {\"other\": 5, "),
                "pipeline.json: dataset \"other\": expected an object like {\"type\": \"file\", \"path\": \"data\"}, got 5".into(),
            ),
            (
                GOOD.replace("\"threshold\": 0.5", "\"threshold\": -1e400"),
                "pipeline.json: parameter \"threshold\": expected a number that fits in 64 bits, got -1e400 (line 3, column 35), which is out of range".into(),
            ),
            (
                GOOD.replace("\"name\": \"batch-scoring\"", "\"name\": 5"),
                "pipeline.json: field \"name\": expected a string, got 5".into(),
            ),
            (
                GOOD.replace("\"name\": \"batch-scoring\",", ""),
                "pipeline.json: missing field \"name\"".into(),
            ),
            (
                GOOD.replace("\"parameters\": {\"threshold\": 0.5}", "\"parameters\": [0.5]"),
                "pipeline.json: field \"parameters\": expected an object, got a list".into(),
            ),
            (
                GOOD.replace("\"datasets\"", "\"dataset\""),
                "pipeline.json: unknown field \"dataset\" (expected one of \"name\", \"parameters\", \"datasets\", \"models\", \"compute\", \"steps\")".into(),
            ),
            (
                GOOD.replace("\"steps\": [", "\"steps\": {\"x\": [").replace("]\n    }", "]}\n    }"),
                "pipeline.json: field \"steps\": expected a list, got an object".into(),
            ),
            (
                GOOD.replace("\"error_threshold\": 10,", "\"error_threshold\": 10 10,"),
                "pipeline.json: invalid JSON (inside \"steps[0].parallel_run_config\"): expected \",\" or \"}\" at line 9 column 58".into(),
            ),
            (
                "\"spec\"".into(),
                "pipeline.json: the spec must be a JSON object with \"name\" and \"steps\", got the string \"spec\"".into(),
            ),
        ];
    for (text, want) in cases {
        assert_ne!(text, GOOD, "the case must change the spec: {want}");
        assert_eq!(err_of(&text), want);
    }
}

/// A spec that sets every field of every struct of the spec (two parallel_run steps, as
/// entry_script and entry_command exclude each other).
const ALL_FIELDS: &str = r#"{"name": "all-fields",
     "parameters": {"n": 3},
     "datasets": {
       "files": {"type": "file", "path": "data", "pattern": "*.txt", "partition_format": "{doc}.txt"},
       "rows": {"type": "tabular", "path": ["data/a.csv"], "format": "csv", "pattern": "*.csv",
                "partition_format": "{part}.csv"},
       "model": {"type": "reference", "path": "data"}},
     "models": {"iris": {"path": "data", "version": 2}},
     "compute": {"hpc": {"type": "slurm", "partition": "debug", "account": "lab", "time": "10",
       "cpus_per_task": 1, "mem": "1G", "extra_args": ["--qos=low"], "bind": "login:7000"}},
     "steps": [
      {"name": "by-batch", "type": "parallel_run", "inputs": ["files"], "side_inputs": ["model"],
       "output": "out1", "arguments": ["--n", "{params.n}"], "allow_reuse": true, "run_after": [],
       "models": ["iris:2"], "compute": "hpc",
       "parallel_run_config": {"source_directory": "scripts", "entry_script": "score.py",
         "mini_batch_size": "5", "error_threshold": 0, "allowed_failed_count": 1,
         "allowed_failed_percent": 10.0, "output_action": "append_row",
         "environment_variables": {"A": "1"}, "env_passthrough": ["HOME"],
         "append_row_file_name": "rows.txt",
         "append_row_format": "csv", "process_count_per_node": 1, "node_count": 1,
         "run_invocation_timeout": 5, "run_max_try": 1, "environment": "python3",
         "logging_level": "INFO", "description": "d"}},
      {"name": "by-key", "type": "parallel_run", "inputs": ["rows"], "output": "out2",
       "parallel_run_config": {"entry_command": ["python3", "w.py"], "partition_keys": ["k"],
         "error_threshold": -1, "tabular_format": "records"}},
      {"name": "cmd", "type": "command", "command": ["true", "{inputs.a}", "{outputs.o}"],
       "source_directory": "scripts", "inputs": {"a": "out1"}, "outputs": ["o"],
       "environment_variables": {"B": "2"}, "env_passthrough": ["USER"], "allow_reuse": false,
       "environment": "python3",
       "run_after": ["by-key"], "models": ["iris"], "compute": "hpc"}
     ]}"#;

/// Every object of `ALL_FIELDS` with the kind of struct it is, its owner and its path.
fn all_field_objects(root: &Value) -> Vec<(String, String, String)> {
    // (struct kind, who, path prefix of its fields)
    let mut out = vec![("top".to_string(), String::new(), String::new())];
    for (name, d) in root["datasets"].as_object().expect("datasets") {
        let kind = d["type"].as_str().expect("type");
        out.push((
            format!("dataset {kind}"),
            format!("dataset {name:?}"),
            format!("datasets.{name}"),
        ));
    }
    for name in root["models"].as_object().expect("models").keys() {
        out.push((
            "model".to_string(),
            format!("model {name:?}"),
            format!("models.{name}"),
        ));
    }
    for name in root["compute"].as_object().expect("compute").keys() {
        out.push((
            "compute slurm".to_string(),
            format!("compute {name:?}"),
            format!("compute.{name}"),
        ));
    }
    for (i, st) in root["steps"].as_array().expect("steps").iter().enumerate() {
        let who = format!("step {:?}", st["name"].as_str().expect("name"));
        let kind = st["type"].as_str().expect("type");
        out.push((format!("step {kind}"), who.clone(), format!("steps.{i}")));
        if kind == "parallel_run" {
            out.push((
                "parallel_run_config".into(),
                who,
                format!("steps.{i}.parallel_run_config"),
            ));
        }
    }
    out
}

fn object_at<'a>(root: &'a mut Value, path: &str) -> &'a mut serde_json::Map<String, Value> {
    let mut v = root;
    for seg in path.split('.').filter(|s| !s.is_empty()) {
        v = match seg.parse::<usize>() {
            Ok(i) => &mut v[i],
            Err(_) => &mut v[seg],
        };
    }
    v.as_object_mut().expect("an object")
}

/// Every field of every step type, dataset type and the top level, given a value of the
/// wrong type, gives one sentence: file, owner, field path, what was expected, what came.
#[test]
fn every_field_names_itself_when_its_type_is_wrong() {
    assert_eq!(err_of(ALL_FIELDS), "ok");
    let root: Value = serde_json::from_str(ALL_FIELDS).expect("json");
    let mut fields_by_kind: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut checked = 0;
    for (kind, who, prefix) in all_field_objects(&root) {
        let keys: Vec<String> = {
            let mut r = root.clone();
            object_at(&mut r, &prefix).keys().cloned().collect()
        };
        for key in keys.iter().filter(|k| *k != "type") {
            fields_by_kind
                .entry(kind.clone())
                .or_default()
                .insert(key.clone());
            let mut r = root.clone();
            let obj = object_at(&mut r, &prefix);
            let (bad, got) = if obj[key].is_object() {
                (serde_json::json!([]), "an empty list")
            } else {
                (serde_json::json!({}), "an object")
            };
            obj.insert(key.clone(), bad);
            let e = err_of(&r.to_string());
            // The field path inside its owner: "parallel_run_config.X" within a step.
            let field = if kind == "parallel_run_config" {
                format!("parallel_run_config.{key}")
            } else {
                key.clone()
            };
            let who = if key == "name" && kind.starts_with("step") {
                let i: usize = prefix["steps.".len()..].parse().expect("index");
                format!("step #{}", i + 1)
            } else {
                who.clone()
            };
            let head = if who.is_empty() {
                format!("pipeline.json: field {field:?}: expected ")
            } else {
                format!("pipeline.json: {who}: field {field:?}: expected ")
            };
            assert!(
                e.starts_with(&head)
                    && e.ends_with(&format!(", got {got}"))
                    && e.lines().count() == 1,
                "{kind} field {key:?}: {e}"
            );
            checked += 1;
        }
    }
    // ALL_FIELDS really sets every field: compare with the lists of known fields that an
    // unknown field brings.
    for (kind, _, prefix) in all_field_objects(&root) {
        let mut r = root.clone();
        object_at(&mut r, &prefix).insert("zzz".into(), Value::Null);
        let e = err_of(&r.to_string());
        let listed: BTreeSet<String> = e
            .split_once("(expected ")
            .map(|(_, l)| l)
            .unwrap_or("")
            .split('"')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        assert!(!listed.is_empty(), "{kind}: {e}");
        assert_eq!(
            fields_by_kind.get(&kind),
            Some(&listed),
            "{kind}: ALL_FIELDS must set every field"
        );
    }
    assert!(checked > 40, "{checked}");
}

#[test]
fn every_out_of_range_number_is_reported_where_it_is() {
    let text = "{\"name\": \"p\", \"steps\": [\n {\"name\": \"aaa\", \"type\": \"parallel_run\", \"inputs\": [],\n  \"parallel_run_config\": {\"entry_script\": \"a.py\", \"error_threshold\": 1e309, \"run_max_try\": 123456789012345678901234567890e300}}]}";
    assert_eq!(
            err_of(text),
            "pipeline.json: step \"aaa\": field \"parallel_run_config.error_threshold\": expected a number that fits in 64 bits, got 1e309 (line 3, column 70), which is out of range\n\
             pipeline.json: step \"aaa\": field \"parallel_run_config.run_max_try\": expected a number that fits in 64 bits, got 123456789012345678901234567890e300 (line 3, column 92), which is out of range"
        );
}

#[test]
fn a_broken_step_does_not_make_its_readers_fail_too() {
    let bad = GOOD.replace("\"mini_batch_size\": \"5\"", "\"mini_batch_size\": 5.5");
    let e = err_of(&bad);
    assert!(!e.contains("unknown data"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    let bad = GOOD.replace("\"path\": \"data\"", "\"path\": 7");
    let e = err_of(&bad);
    assert_eq!(e.lines().count(), 1, "{e}");
}

#[test]
fn cycles_are_named() {
    let text = r#"{"name": "p", "steps": [
          {"name": "aaa", "type": "command", "command": ["true"], "inputs": {"x": "c"}, "outputs": ["a"]},
          {"name": "bbb", "type": "command", "command": ["true"], "inputs": {"x": "a"}, "outputs": ["b"]},
          {"name": "ccc", "type": "command", "command": ["true"], "inputs": {"x": "b"}, "outputs": ["c"]}
        ]}"#;
    assert!(
        err_of(text).contains("aaa -> bbb -> ccc -> aaa"),
        "{}",
        err_of(text)
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_spec(&text, "fuzz.json", Path::new("/nonexistent"));
    }

    #[test]
    fn mutated_specs_never_panic(cut in 0usize..1200, insert in ".{0,8}") {
        let mut s = GOOD.to_string();
        let at = s.char_indices().map(|(i, _)| i).nth(cut % GOOD.chars().count()).unwrap_or(0);
        s.insert_str(at, &insert);
        if let Err(e) = parse_spec(&s, "fuzz.json", Path::new("/nonexistent")) {
            for m in &e.messages {
                proptest::prop_assert!(m.starts_with("fuzz.json: "), "{}", m);
                proptest::prop_assert!(!m.contains("did not match any variant"), "{}", m);
            }
        }
    }
}
