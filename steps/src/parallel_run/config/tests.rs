//! Unit tests of the config rules.
use super::*;

fn base() -> ParallelRunConfigBuilder {
    ParallelRunConfig::builder()
        .entry_script("score.py")
        .source_directory("scripts")
        .error_threshold(10)
}

fn field_of(b: ParallelRunConfigBuilder) -> String {
    match b.build() {
        Err(e) => e.field,
        Ok(_) => "ok".into(),
    }
}

#[test]
fn defaults_are_azures() -> Result<(), ConfigError> {
    let c = base().build()?;
    assert_eq!(c.run_invocation_timeout(), Duration::from_secs(60));
    assert_eq!(c.run_max_try(), 3);
    assert_eq!(c.append_row_file_name(), "parallel_run_step.txt");
    assert_eq!(c.output_action(), OutputAction::AppendRow);
    assert_eq!(c.node_count(), 1);
    assert_eq!(c.environment(), "python3");
    assert_eq!(c.error_threshold(), Limit::AtMost(10));
    assert_eq!(c.allowed_failed_count(), Limit::Unlimited);
    assert_eq!(c.allowed_failed_percent(), Limit::Unlimited);
    assert_eq!(c.mini_batch_size(), None);
    Ok(())
}

#[test]
fn each_rule_names_its_field() {
    assert_eq!(
        field_of(ParallelRunConfig::builder().entry_script("a.py")),
        "error_threshold"
    );
    assert_eq!(
        field_of(ParallelRunConfig::builder().error_threshold(1)),
        "entry_script"
    );
    assert_eq!(field_of(base().error_threshold(-2)), "error_threshold");
    assert_eq!(field_of(base().error_threshold(-1)), "ok");
    assert_eq!(
        field_of(base().allowed_failed_count(-2)),
        "allowed_failed_count"
    );
    assert_eq!(field_of(base().allowed_failed_count(-1)), "ok");
    assert_eq!(
        field_of(base().allowed_failed_percent(100.5)),
        "allowed_failed_percent"
    );
    assert_eq!(
        field_of(base().allowed_failed_percent(-0.1)),
        "allowed_failed_percent"
    );
    assert_eq!(field_of(base().allowed_failed_percent(100.0)), "ok");
    for bad in ["", "1.5MB", "MB", "10 MB", "-1", "5K", "0", "0KB"] {
        assert_eq!(
            field_of(base().mini_batch_size(bad)),
            "mini_batch_size",
            "{bad}"
        );
    }
    for ok in ["1024", "64KB", "10mb", "1GB", "5"] {
        assert_eq!(field_of(base().mini_batch_size(ok)), "ok", "{ok}");
    }
    assert_eq!(
        field_of(base().mini_batch_size("5").partition_keys(["a"])),
        "partition_keys"
    );
    assert_eq!(
        field_of(base().partition_keys(Vec::<String>::new())),
        "partition_keys"
    );
    let twice = base().partition_keys(["user", "genres", "user"]).build();
    assert!(
        matches!(&twice, Err(e) if e.to_string().contains("partition_keys")
            && e.to_string().contains("\"user\" twice")),
        "{twice:?}"
    );
    assert_eq!(
        field_of(base().run_invocation_timeout(0)),
        "run_invocation_timeout"
    );
    assert_eq!(field_of(base().run_max_try(0)), "run_max_try");
    for bad in ["a/b.txt", "a\\b", "c:d", "", "x?y"] {
        assert_eq!(
            field_of(base().append_row_file_name(bad)),
            "append_row_file_name",
            "{bad}"
        );
    }
    assert_eq!(
        field_of(base().process_count_per_node(0)),
        "process_count_per_node"
    );
    assert_eq!(field_of(base().node_count(0)), "node_count");
    assert_eq!(
        field_of(base().process_count_per_node(64).node_count(17)),
        "process_count_per_node"
    );
    for bad in ["", "A=B", "A\0"] {
        assert_eq!(
            field_of(base().env_passthrough([bad])),
            "env_passthrough",
            "{bad:?}"
        );
    }
    assert_eq!(field_of(base().env_passthrough(["B", "A", "B"])), "ok");
    assert_eq!(
        field_of(base().environment_variable("A=B", "x")),
        "environment_variables"
    );
    assert_eq!(
        field_of(
            ParallelRunConfig::builder()
                .entry_command(Vec::<String>::new())
                .error_threshold(1)
        ),
        "entry_command"
    );
}

#[test]
fn entry_script_without_source_directory_uses_its_own_folder() -> Result<(), ConfigError> {
    let c = ParallelRunConfig::builder()
        .entry_script("scripts/score.py")
        .error_threshold(0)
        .build()?;
    assert!(c
        .source_directory()
        .is_some_and(|d| d.is_absolute() && d.ends_with("scripts")));
    assert!(matches!(c.entry(), Entry::Python { entry_script } if entry_script == "score.py"));
    Ok(())
}

#[test]
fn arguments_are_keyword_style_without_reserved_names() {
    assert!(check_arguments(&["--threshold".into(), "0.5".into()]).is_ok());
    assert!(check_arguments(&[]).is_ok());
    assert_eq!(
        check_arguments(&["0.5".into()]).map_err(|e| e.field),
        Err("arguments".into())
    );
    let e = check_arguments(&["--x".into(), "1".into(), "--output".into(), "o".into()]);
    assert!(e.is_err_and(|e| e.message.contains("--output")));
    assert!(check_arguments(&["--mini_batch_size=3".into()]).is_err());
}

#[test]
fn resource_knobs_stay_out_of_the_fingerprint() -> Result<(), ConfigError> {
    let a = base()
        .process_count_per_node(1)
        .node_count(1)
        .logging_level("DEBUG")
        .build()?;
    let b = base()
        .process_count_per_node(8)
        .node_count(2)
        .description("x")
        .build()?;
    assert_eq!(a.fingerprint_config(), b.fingerprint_config());
    let c = base().mini_batch_size("3").build()?;
    assert_ne!(a.fingerprint_config(), c.fingerprint_config());
    Ok(())
}

#[test]
fn azures_minus_one_is_no_limit() -> Result<(), ConfigError> {
    assert_eq!(Limit::from_azure("f", -1)?, Limit::Unlimited);
    assert_eq!(Limit::from_azure("f", 0)?, Limit::AtMost(0));
    assert_eq!(Limit::from_azure("f", 7)?, Limit::AtMost(7));
    let e = Limit::from_azure("allowed_failed_count", -2).map_err(|e| e.to_string());
    assert_eq!(
        e,
        Err("allowed_failed_count: must be -1 or more, not -2".into())
    );
    let c = base()
        .error_threshold(-1)
        .allowed_failed_count(-1)
        .allowed_failed_percent(12.5)
        .run_invocation_timeout(5)
        .build()?;
    assert_eq!(c.error_threshold(), Limit::Unlimited);
    assert_eq!(c.allowed_failed_count(), Limit::Unlimited);
    assert_eq!(c.allowed_failed_percent(), Limit::AtMost(12.5));
    assert_eq!(c.run_invocation_timeout(), Duration::from_secs(5));
    // -1 and leaving the field out are one thing, in the fingerprint too.
    let unset = base().error_threshold(-1).build()?;
    assert_eq!(c.allowed_failed_count(), unset.allowed_failed_count());
    let a = base().allowed_failed_count(-1).build()?;
    assert_eq!(a.fingerprint_config(), base().build()?.fingerprint_config());
    Ok(())
}

#[test]
fn limits_compare_and_display() {
    assert!(!Limit::Unlimited.exceeded_by(u64::MAX));
    assert!(!Limit::AtMost(2).exceeded_by(2));
    assert!(Limit::AtMost(2).exceeded_by(3));
    assert!(Limit::AtMost(0.5).exceeded_by(0.6));
    assert_eq!(Limit::AtMost(3).to_string(), "3");
    assert_eq!(Limit::<f64>::Unlimited.to_string(), "no limit");
    assert_eq!(Limit::AtMost(2.5).to_string(), "2.5");
}

#[test]
fn mini_batch_size_is_parsed_at_build() -> Result<(), ConfigError> {
    let c = base().mini_batch_size("64KB").build()?;
    assert_eq!(c.mini_batch_size().map(MiniBatchSize::as_str), Some("64KB"));
    assert_eq!(c.batch_size(true), Ok(BatchSize::Bytes(64 << 10)));
    assert!(c.batch_size(false).is_err());
    let d = base().build()?;
    assert_eq!(d.batch_size(false), Ok(BatchSize::Files(10)));
    assert_eq!(d.batch_size(true), Ok(BatchSize::Bytes(1 << 20)));
    Ok(())
}
