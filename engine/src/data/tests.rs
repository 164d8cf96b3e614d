use super::*;

#[test]
fn file_dataset_lists_sorted_and_filtered() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    fs_err::create_dir_all(dir.path().join("b"))?;
    for f in ["z.png", "a.png", "b/c.png", "b/d.txt"] {
        fs_err::write(dir.path().join(f), f)?;
    }
    let ds = FileDataset::from_files("imgs", dir.path()).with_pattern("**/*.png");
    let rel: Vec<_> = ds.list()?.into_iter().map(|f| f.relative).collect();
    assert_eq!(rel, ["a.png", "b/c.png", "z.png"]);
    Ok(())
}

#[test]
fn globs_with_folders_count_levels() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    for f in [
        "top.wav",
        "ana/summer/jazz.wav",
        "ana/summer/deep/x.wav",
        "ana/b.jpg",
        "c.jpg",
    ] {
        let p = dir.path().join(f);
        if let Some(parent) = p.parent() {
            fs_err::create_dir_all(parent)?;
        }
        fs_err::write(p, f)?;
    }
    let rel = |pattern: &str| -> Result<Vec<String>, crate::error::FilesError> {
        Ok(FileDataset::from_files("d", dir.path())
            .with_pattern(pattern)
            .list()?
            .into_iter()
            .map(|f| f.relative)
            .collect())
    };
    assert_eq!(rel("*/*/*.wav")?, ["ana/summer/jazz.wav"]);
    assert_eq!(rel("*.wav")?, ["top.wav"]);
    assert_eq!(rel("**/*.jpg")?, ["ana/b.jpg", "c.jpg"]);
    assert_eq!(rel("**/*.wav")?.len(), 3);
    Ok(())
}

#[test]
fn a_tabular_pattern_leaves_stray_files_out() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    fs_err::write(dir.path().join("a.csv"), "x\n1\n")?;
    fs_err::write(dir.path().join("README.md"), "# data")?;
    let ds = TabularDataset::from_delimited_files("t", vec![dir.path().to_path_buf()])
        .with_pattern("*.csv");
    let files = ds.list()?;
    assert_eq!(files.len(), 1);
    assert!(
        files[0].relative.ends_with("/a.csv"),
        "{:?}",
        files[0].relative
    );
    Ok(())
}

#[test]
fn a_pattern_matching_no_file_is_an_error_naming_it() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    fs_err::write(dir.path().join("a.csv"), "x\n1\n")?;
    fs_err::write(dir.path().join("README.md"), "# data")?;
    let tab = TabularDataset::from_delimited_files("t", vec![dir.path().to_path_buf()])
        .with_pattern("*.parquet");
    let files = FileDataset::from_files("f", dir.path()).with_pattern("*/*.wav");
    for (e, pattern) in [
        (tab.list().err(), "\"*.parquet\""),
        (files.list().err(), "\"*/*.wav\""),
    ] {
        let e = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.contains(pattern) && e.contains("matches no file") && e.contains("2 files"),
            "{e}"
        );
    }
    // Without a pattern an empty folder is still an empty dataset.
    let empty = tempfile::tempdir()?;
    assert!(FileDataset::from_files("e", empty.path())
        .list()?
        .is_empty());
    Ok(())
}

#[test]
fn bad_glob_is_an_error() {
    let ds = FileDataset::from_files("x", ".").with_pattern("a[");
    assert!(ds.list().is_err());
}

#[test]
fn a_missing_dataset_path_is_said_to_not_exist() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("iriss");
    let err = FileDataset::from_files("iris", &missing)
        .list()
        .err()
        .ok_or("listed a missing folder")?;
    assert!(matches!(err, FilesError::Missing { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("{} does not exist", missing.display())
    );
    Ok(())
}
