use super::*;

fn parse(text: &str) -> Result<Environment, Box<dyn std::error::Error>> {
    Ok(parse_value(&serde_json::from_str::<Value>(text)?)?)
}

#[test]
fn a_string_is_an_interpreter_and_an_object_adds_requirements(
) -> Result<(), Box<dyn std::error::Error>> {
    let plain = parse(r#""python3.11""#)?;
    assert_eq!(plain, Environment::python("python3.11"));
    assert!(!plain.has_requirements());
    let listed = parse(r#"{"python": "python3", "requirements": ["six==1.16.0", " # c", ""]}"#)?;
    assert_eq!(
        listed,
        Environment::python("python3").requirements(["six==1.16.0"])
    );
    assert!(listed.has_requirements());
    let file = parse(r#"{"requirements": "requirements.txt"}"#)?;
    assert_eq!(file.interpreter(), "python3");
    assert_eq!(file.file.as_deref(), Some(Path::new("requirements.txt")));
    let empty = parse(r#"{"requirements": []}"#)?;
    assert!(!empty.has_requirements());
    Ok(())
}

#[test]
fn bad_environments_say_what_was_expected() {
    for (text, says) in [
        ("5", "expected an interpreter"),
        (r#""""#, "expected an interpreter"),
        (r#"{"python": 3}"#, "\"python\": expected an interpreter"),
        (r#"{"requirements": [1]}"#, "expected requirement strings"),
        (r#"{"requirements": {}}"#, "expected a list of requirements"),
        (r#"{"packages": []}"#, "\"packages\" is not a field"),
    ] {
        match parse(text) {
            Err(e) => assert!(e.to_string().contains(says), "{text}: {e}"),
            Ok(env) => panic!("{text} parsed as {env:?}"),
        }
    }
}

#[test]
fn a_requirements_file_is_read_and_checked() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let p = dir.path().join("requirements.txt");
    fs::write(&p, "# pinned\nsix==1.16.0  # small\n\nattrs==23.1.0\n")?;
    let env = Environment::from_pip_requirements("scoring", &p)?;
    assert_eq!(env.requirement_lines(), ["six==1.16.0", "attrs==23.1.0"]);
    let missing = Environment::from_pip_requirements("x", dir.path().join("nope.txt"));
    assert!(
        matches!(&missing, Err(e) if e.field() == "requirements"
            && e.to_string().starts_with("cannot read requirements file: ")
            && e.to_string().matches("nope.txt").count() == 1
            && std::error::Error::source(e).is_some()),
        "{missing:?}"
    );
    fs::write(&p, "-r other.txt\n")?;
    let options = Environment::from_pip_requirements("x", &p);
    assert!(matches!(options, Err(e) if e.to_string().contains("not supported")));
    fs::write(&p, "# nothing\n")?;
    let empty = Environment::from_pip_requirements("x", &p);
    assert!(matches!(empty, Err(e) if e.to_string().contains("no requirement")));
    Ok(())
}

#[test]
fn the_hash_covers_requirements_and_interpreter_version_only() {
    let a = env_hash("3.11.7 x86_64", &["six==1.16.0".to_string()]);
    assert_eq!(a.len(), 32);
    assert!(stepgraph_engine::is_env_hash(&a));
    assert_eq!(a, env_hash("3.11.7 x86_64", &["six==1.16.0".to_string()]));
    assert_ne!(a, env_hash("3.11.7 x86_64", &["six==1.15.0".to_string()]));
    assert_ne!(a, env_hash("3.12.1 x86_64", &["six==1.16.0".to_string()]));
    // Comments and blank lines are not content.
    let noisy = Environment::python("python3").requirements(["", "# pin", "six==1.16.0 # ok"]);
    assert_eq!(env_hash("3.11.7 x86_64", noisy.requirement_lines()), a);
}

#[test]
fn a_failed_build_names_the_requirement_the_log_names() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("build.log");
    fs::write(
        &log,
        "$ pip install\nERROR: No matching distribution found for stepgraph_nope==1.0\n",
    )?;
    let reqs = ["six==1.16.0".to_string(), "stepgraph-nope==1.0".to_string()];
    let e = build_failure(&log, &reqs, "exit status: 1".into(), None);
    assert!(
        matches!(&e, EnvironmentError::Build { requirement: Some(r), .. } if r == "stepgraph-nope==1.0"),
        "{e}"
    );
    let m = e.to_string();
    assert!(
        m.contains("installing requirement \"stepgraph-nope==1.0\" failed"),
        "{m}"
    );
    assert!(m.contains("No matching distribution"), "{m}");
    assert!(m.contains(&log.display().to_string()), "{m}");
    fs::write(&log, "network down\n")?;
    let m = build_failure(&log, &reqs, "exit status: 2".into(), None).to_string();
    assert!(m.contains("six==1.16.0, stepgraph-nope==1.0"), "{m}");
    assert_eq!(
        requirement_name("pandas[excel]>=1.5; python_version>'3'"),
        "pandas"
    );
    // A name inside a longer word (a path, another project) is not the one that failed.
    fs::write(
        &log,
        "$ uv pip install --python /e/venv/bin/python -r /e/requirements.txt
         Using Python 3.11.7 environment at: /e/venv
           Because six-extra was not found and you require six-extra==99, unsatisfiable.
",
    )?;
    let reqs = [
        "py==1.11.0".to_string(),
        "six==1.16.0".to_string(),
        "six-extra==99".to_string(),
    ];
    let e = build_failure(&log, &reqs, "exit status: 1".into(), None);
    assert!(
        matches!(&e, EnvironmentError::Build { requirement: Some(r), .. } if r == "six-extra==99"),
        "{e}"
    );
    assert!(names_project(
        "no solution for zope.interface==9.",
        "zope.interface"
    ));
    assert!(!names_project("import six.moves", "six"));
    Ok(())
}

#[test]
fn a_plain_interpreter_builds_nothing_and_adds_no_component(
) -> Result<(), Box<dyn std::error::Error>> {
    let env = Environment::python("python3");
    assert!(env.component().is_none());
    let dir = tempfile::tempdir()?;
    assert!(env.ensure_built(dir.path())?.is_none());
    assert!(!dir.path().join("envs").exists());
    Ok(())
}

#[test]
fn a_store_folder_that_cannot_be_made_is_named_once() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("not-a-folder");
    fs::write(&file, "")?;
    let envs = file.join("envs");
    let env = Environment::python("python3").requirements(["six==1.16.0"]);
    match env.ensure_built(&envs) {
        // No python3 here: the probe fails first, naming the interpreter.
        Err(EnvironmentError::Interpreter { python, .. }) => assert_eq!(python, "python3"),
        Err(e @ EnvironmentError::Io(_)) => {
            let text = e.to_string();
            assert_eq!(
                text.matches(&envs.display().to_string()).count(),
                1,
                "{text}"
            );
            assert_eq!(e.field(), "");
        }
        other => return Err(format!("expected an I/O error, got {other:?}").into()),
    }
    Ok(())
}

#[test]
fn an_interpreter_that_cannot_run_is_named_with_its_cause() {
    let env = Environment::python("/nonexistent/stepgraph-python").requirements(["six"]);
    let e = match env.hash() {
        Err(e) => e,
        Ok(h) => panic!("hashed with a missing interpreter: {h}"),
    };
    assert!(
        matches!(&e, EnvironmentError::Interpreter { python, .. } if python == "/nonexistent/stepgraph-python"),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("cannot run the interpreter \"/nonexistent/stepgraph-python\": "),
        "{e}"
    );
    assert!(std::error::Error::source(&e).is_some());
    // The memo keeps the failure: asking again says the same.
    assert_eq!(env.hash().err().map(|e| e.to_string()), Some(e.to_string()));
}
