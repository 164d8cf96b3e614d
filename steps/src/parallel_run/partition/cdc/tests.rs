// Tests use std::fs directly; the library uses fs_err (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use proptest::prelude::*;
use tempfile::TempDir;

use super::super::test_support::{csv_source, jsonl_source, segment_bytes, write};
use super::*;

fn names(n: usize) -> Vec<(PathBuf, String)> {
    (0..n)
        .map(|i| {
            let rel = format!("day/{i:06}.bin");
            (PathBuf::from(format!("/data/{rel}")), rel)
        })
        .collect()
}

fn file_batches(specs: &[MiniBatchSpec]) -> Vec<Vec<PathBuf>> {
    specs
        .iter()
        .map(|s| match s {
            MiniBatchSpec::Files { files, .. } => files.clone(),
            MiniBatchSpec::Tabular { .. } => panic!("expected files"),
        })
        .collect()
}

/// The content of each tabular mini-batch (header + rows), as a worker rebuilds it.
fn tabular_contents(specs: &[MiniBatchSpec]) -> Vec<Vec<u8>> {
    specs
        .iter()
        .map(|s| match s {
            MiniBatchSpec::Tabular { segments, .. } => {
                segments.iter().flat_map(segment_bytes).collect()
            }
            MiniBatchSpec::Files { .. } => panic!("expected rows"),
        })
        .collect()
}

#[test]
fn file_mini_batches_keep_every_file_in_order_within_bounds() {
    let files = names(5000);
    let specs = partition_files_cdc(&files, 40);
    let batches = file_batches(&specs);
    let flat: Vec<PathBuf> = batches.iter().flatten().cloned().collect();
    assert_eq!(flat, files.iter().map(|f| f.0.clone()).collect::<Vec<_>>());
    let (min, max) = bounds(40);
    for b in &batches[..batches.len() - 1] {
        assert!(
            b.len() as u64 >= min && b.len() as u64 <= max,
            "{}",
            b.len()
        );
    }
    let mean = files.len() as f64 / batches.len() as f64;
    assert!(
        (25.0..=60.0).contains(&mean),
        "mean mini-batch {mean} files"
    );
    // Deterministic.
    assert_eq!(partition_files_cdc(&files, 40), specs);
}

#[test]
fn a_size_of_one_puts_each_file_in_its_own_mini_batch() {
    let files = names(7);
    assert_eq!(partition_files_cdc(&files, 1).len(), 7);
    assert!(partition_files_cdc(&[], 10).is_empty());
}

#[test]
fn tabular_mini_batches_cover_every_record_once_within_bounds() {
    let dir = TempDir::new().expect("tempdir");
    let mut csv = b"id,text\n".to_vec();
    for i in 0..4000 {
        csv.extend_from_slice(format!("{i},row number {i} {}\n", "x".repeat(i % 17)).as_bytes());
    }
    let path = write(&dir, "a.csv", &csv);
    let specs = specs_of(partition_tabular_cdc(&[csv_source(&path)], 2048).expect("partition"));
    let (min, max) = bounds(2048);
    let mut rows = 0;
    for (i, s) in specs.iter().enumerate() {
        let MiniBatchSpec::Tabular { bytes, rows: r, .. } = s else {
            panic!("rows")
        };
        rows += r;
        assert!(*bytes <= max + 64, "mini-batch {i} has {bytes} bytes");
        if i + 1 < specs.len() {
            assert!(*bytes >= min, "mini-batch {i} has {bytes} bytes");
        }
    }
    assert_eq!(rows, 4000);
    let total: usize = csv.len() - 8;
    let mean = total as f64 / specs.len() as f64;
    assert!((1000.0..=4000.0).contains(&mean), "mean {mean} bytes");
}

#[test]
fn each_tabular_file_starts_a_mini_batch() {
    let dir = TempDir::new().expect("tempdir");
    let a = write(&dir, "a.jsonl", b"{\"a\":1}\n{\"a\":2}\n");
    let b = write(&dir, "b.jsonl", b"{\"a\":3}\n");
    let specs = specs_of(
        partition_tabular_cdc(&[jsonl_source(&a), jsonl_source(&b)], 1 << 20).expect("partition"),
    );
    assert_eq!(specs.len(), 2);
    assert_eq!(
        tabular_contents(&specs),
        vec![b"{\"a\":1}\n{\"a\":2}\n".to_vec(), b"{\"a\":3}\n".to_vec()]
    );
}

fn specs_of(with_digests: Vec<(MiniBatchSpec, blake3::Hash)>) -> Vec<MiniBatchSpec> {
    with_digests.into_iter().map(|(s, _)| s).collect()
}

/// How many mini-batches of `after` are not mini-batches of `before` (by content).
fn changed<T: Ord + Clone>(before: &[T], after: &[T]) -> usize {
    let old: BTreeSet<&T> = before.iter().collect();
    after.iter().filter(|b| !old.contains(b)).count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Inserting or deleting files leaves every mini-batch away from the edits as it was.
    #[test]
    fn file_edits_disturb_only_their_neighbourhood(
        n in 200usize..1500,
        average in 2u64..40,
        inserts in proptest::collection::vec((0usize..100_000, "[a-z]{1,8}"), 0..4),
        deletes in proptest::collection::vec(0usize..100_000, 0..4),
    ) {
        let before = names(n);
        let mut after = before.clone();
        for d in &deletes {
            if !after.is_empty() {
                after.remove(d % after.len());
            }
        }
        for (at, name) in &inserts {
            let rel = format!("day/new-{name}");
            let i = at % (after.len() + 1);
            after.insert(i, (PathBuf::from(format!("/data/{rel}")), rel));
        }
        let old = file_batches(&partition_files_cdc(&before, average));
        let new = file_batches(&partition_files_cdc(&after, average));
        let edits = inserts.len() + deletes.len();
        // Each edit touches its own mini-batch and, through the bounds, a few after it.
        prop_assert!(changed(&old, &new) <= edits * 6, "{} changed for {edits} edits", changed(&old, &new));
        let flat: Vec<PathBuf> = new.into_iter().flatten().collect();
        prop_assert_eq!(flat, after.into_iter().map(|f| f.0).collect::<Vec<_>>());
    }

    /// Appending, inserting or deleting rows leaves the mini-batches away from the edits as
    /// they were.
    #[test]
    fn row_edits_disturb_only_their_neighbourhood(
        rows in proptest::collection::vec("[a-z0-9 ]{0,40}", 100..800),
        average in 256u64..2048,
        edits in proptest::collection::vec((0usize..100_000, 0u8..3, "[a-z]{1,30}"), 1..4),
    ) {
        let dir = TempDir::new().expect("tempdir");
        let render = |rows: &[String]| {
            let mut out = b"text\n".to_vec();
            for r in rows {
                out.extend_from_slice(format!("\"{r}\"\n").as_bytes());
            }
            out
        };
        let mut after = rows.clone();
        for (at, kind, text) in &edits {
            let i = at % (after.len() + 1);
            match kind {
                0 => after.push(text.clone()),
                1 => after.insert(i, text.clone()),
                _ => {
                    if !after.is_empty() {
                        after.remove(i % after.len());
                    }
                }
            }
        }
        let a = write(&dir, "before.csv", &render(&rows));
        let b = write(&dir, "after.csv", &render(&after));
        let old = tabular_contents(&specs_of(partition_tabular_cdc(&[csv_source(&a)], average).expect("before")));
        let with_digests = partition_tabular_cdc(&[csv_source(&b)], average).expect("after");
        // The digest computed while partitioning is the one computed from the segment.
        for (spec, digest) in &with_digests {
            let MiniBatchSpec::Tabular { segments, .. } = spec else { panic!("rows") };
            prop_assert_eq!(segments.len(), 1);
            prop_assert_eq!(segment_digest(&segments[0]).expect("digest"), *digest);
        }
        let new = tabular_contents(&specs_of(with_digests));
        prop_assert!(changed(&old, &new) <= edits.len() * 6, "{} of {} changed for {} edits", changed(&old, &new), new.len(), edits.len());
        // Every row once, in order.
        let body: Vec<u8> = new.iter().flat_map(|c| c[5..].to_vec()).collect();
        prop_assert_eq!(body, render(&after)[5..].to_vec());
    }
}

/// The boundaries of a plain gear pass over every byte (no skipping), for comparison.
fn reference_cuts(records: &[Vec<u8>], average: u64) -> Vec<usize> {
    let (min, max) = bounds(average);
    let mask = mask_for((average - min).max(1));
    let (mut hash, mut bytes, mut armed, mut cuts) = (0u64, 0u64, false, Vec::new());
    for (i, r) in records.iter().enumerate() {
        for &b in r {
            hash = (hash << 1).wrapping_add(GEAR[b as usize]);
            bytes += 1;
            if !armed && bytes >= min && hash & mask == 0 {
                armed = true;
            }
        }
        if armed || bytes >= max {
            cuts.push(i + 1);
            bytes = 0;
            armed = false;
        }
    }
    cuts
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Skipping the bytes before `min - 64` does not move any boundary.
    #[test]
    fn skipping_bytes_no_test_can_see_moves_no_boundary(
        rows in proptest::collection::vec("[a-z0-9 ]{0,200}", 20..300),
        average in 64u64..4096,
    ) {
        let dir = TempDir::new().expect("tempdir");
        let mut text = "t\n".to_string();
        let mut records = Vec::new();
        for r in &rows {
            let line = format!("\"{r}\"\n");
            records.push(line.clone().into_bytes());
            text.push_str(&line);
        }
        let path = write(&dir, "a.csv", text.as_bytes());
        let specs = specs_of(partition_tabular_cdc(&[csv_source(&path)], average).expect("partition"));
        let mut cuts = Vec::new();
        let mut seen = 0usize;
        for s in &specs {
            let MiniBatchSpec::Tabular { rows, .. } = s else { panic!("rows") };
            seen += *rows as usize;
            cuts.push(seen);
        }
        let mut expected = reference_cuts(&records, average);
        if expected.last() != Some(&records.len()) {
            expected.push(records.len());
        }
        prop_assert_eq!(cuts, expected);
    }
}
