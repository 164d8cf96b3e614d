//! Key grouping: one mini-batch per distinct combination of the `partition_keys` columns'
//! values, in order of first appearance.

use std::collections::HashMap;

use super::csv::CsvScanner;
use super::jsonl::scan_jsonl_keys;
use super::IO_BUFFER_BYTES;
use super::{BatchBuilder, MiniBatchSpec, PartitionError, TabularFormat, TabularSource};

/// Splits tabular files into one mini-batch per distinct combination of the
/// values of the `keys` columns, in order of first appearance.
///
/// Each mini-batch lists, per file (in the given file order, at most one
/// segment per file), the ranges of its rows with adjacent ranges merged, and
/// carries `partition_key_value`: key column -> value. CSV values are the field
/// text (which must be UTF-8); JSON Lines values are JSON strings unquoted and
/// other JSON values as compact JSON text (`1`, `true`, `null`, `[1,2]`).
///
/// Errors: a CSV file whose header lacks a key column, or a JSON Lines record
/// lacking a key, is [`PartitionError::MissingKeyColumn`]; a JSON Lines record
/// that is not a JSON object is [`PartitionError::JsonLine`]. A completely
/// empty CSV file (no header) contributes nothing. With no keys, every row
/// belongs to a single mini-batch with an empty key map.
///
/// Memory grows with the number of distinct keys and ranges; row data is never
/// held beyond the record being scanned.
pub fn partition_by_keys(
    sources: &[TabularSource],
    keys: &[String],
) -> Result<Vec<MiniBatchSpec>, PartitionError> {
    partition_by_keys_with(sources, keys, IO_BUFFER_BYTES)
}

/// [`partition_by_keys`] with a given read buffer size.
fn partition_by_keys_with(
    sources: &[TabularSource],
    keys: &[String],
    buffer_bytes: usize,
) -> Result<Vec<MiniBatchSpec>, PartitionError> {
    let mut groups = KeyedBatches::default();
    for (file_index, source) in sources.iter().enumerate() {
        match source.format {
            TabularFormat::Csv => {
                let mut scanner = CsvScanner::open(&source.path, keys, buffer_bytes)?;
                while let Some(range) = scanner.next_record()? {
                    groups.push(&scanner.keys, file_index, source, scanner.header_end, range);
                }
            }
            TabularFormat::JsonLines => {
                scan_jsonl_keys(&source.path, keys, buffer_bytes, |values, range| {
                    groups.push(values, file_index, source, 0, range);
                })?;
            }
        }
    }
    Ok(groups.into_specs(keys))
}

/// Mini-batches by key, in order of first appearance.
#[derive(Debug, Default)]
struct KeyedBatches {
    index: HashMap<Vec<String>, usize>,
    batches: Vec<(Vec<String>, BatchBuilder)>,
}

impl KeyedBatches {
    fn push(
        &mut self,
        values: &[String],
        file_index: usize,
        source: &TabularSource,
        header_end: u64,
        range: (u64, u64),
    ) {
        let slot = match self.index.get(values) {
            Some(&slot) => slot,
            None => {
                let slot = self.batches.len();
                self.batches
                    .push((values.to_vec(), BatchBuilder::default()));
                self.index.insert(values.to_vec(), slot);
                slot
            }
        };
        if let Some((_, builder)) = self.batches.get_mut(slot) {
            builder.push(file_index, source, header_end, range);
        }
    }

    fn into_specs(self, keys: &[String]) -> Vec<MiniBatchSpec> {
        self.batches
            .into_iter()
            .map(|(values, builder)| {
                let map = keys.iter().cloned().zip(values).collect();
                builder.into_spec(Some(map))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;
    use super::*;
    use proptest::prelude::*;
    use tempfile::TempDir;

    // ---- partition_by_keys ------------------------------------------------------

    #[test]
    fn by_keys_csv_two_keys() {
        let dir = TempDir::new().expect("tempdir");
        let f1 = write(
            &dir,
            "1.csv",
            b"region,year,v\neu,2020,1\neu,2020,2\nus,2020,3\neu,2021,4\n\"e,u\",2020,5\neu,2020,6\n",
        );
        let f2 = write(
            &dir,
            "2.csv",
            b"v,year,region\r\n7,2021,eu\r\n8,2020,eu\r\n",
        );
        let keys = vec!["region".to_string(), "year".to_string()];
        let batches =
            partition_by_keys(&[csv_source(&f1), csv_source(&f2)], &keys).expect("by keys");
        let summary: Vec<(KeyMap, Vec<Vec<String>>)> = batches
            .iter()
            .map(|b| (tabular(b).3.cloned().expect("key map"), batch_rows(b)))
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    keymap(&[("region", "eu"), ("year", "2020")]),
                    vec![
                        row(&["eu", "2020", "1"]),
                        row(&["eu", "2020", "2"]),
                        row(&["eu", "2020", "6"]),
                        row(&["8", "2020", "eu"]),
                    ]
                ),
                (
                    keymap(&[("region", "us"), ("year", "2020")]),
                    vec![row(&["us", "2020", "3"])]
                ),
                (
                    keymap(&[("region", "eu"), ("year", "2021")]),
                    vec![row(&["eu", "2021", "4"]), row(&["7", "2021", "eu"])]
                ),
                (
                    keymap(&[("region", "e,u"), ("year", "2020")]),
                    vec![row(&["e,u", "2020", "5"])]
                ),
            ]
        );
        // First batch: rows 1-2 merged, row 6 separate; one segment per file.
        let (segments, rows, ..) = tabular(&batches[0]);
        assert_eq!(rows, 4);
        assert_eq!(segments.len(), 2);
        assert_eq!(segments[0].ranges, vec![(14, 34), (67, 77)]);
        assert_eq!(segments[1].header_end, 15);
        assert_eq!(segments[1].ranges, vec![(26, 37)]);
    }

    #[test]
    fn by_keys_jsonl_two_keys_renders_json_values() {
        let dir = TempDir::new().expect("tempdir");
        let data = concat!(
            "{\"k\":\"a\",\"n\":1,\"v\":1}\n",
            "\n",
            "{\"k\":\"a\",\"n\":1,\"v\":2}\n",
            "{\"k\":\"a\",\"n\":1.5,\"v\":3}\n",
            "{\"n\":null,\"k\":true,\"v\":4}\n",
            "{\"k\":\"a\",\"n\":1,\"v\":5}\n",
            "{\"k\":[1,\"x\"],\"n\":{\"z\":0},\"v\":6}",
        );
        let path = write(&dir, "k.jsonl", data.as_bytes());
        let keys = vec!["k".to_string(), "n".to_string()];
        let batches = partition_by_keys(&[jsonl_source(&path)], &keys).expect("by keys");
        let summary: Vec<(BTreeMap<String, String>, Vec<String>)> = batches
            .iter()
            .map(|b| {
                let values = batch_rows(b).into_iter().map(|r| r[2].clone()).collect();
                (tabular(b).3.cloned().expect("key map"), values)
            })
            .collect();
        let vals = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            summary,
            vec![
                (keymap(&[("k", "a"), ("n", "1")]), vals(&["1", "2", "5"])),
                (keymap(&[("k", "a"), ("n", "1.5")]), vals(&["3"])),
                (keymap(&[("k", "true"), ("n", "null")]), vals(&["4"])),
                (
                    keymap(&[("k", "[1,\"x\"]"), ("n", "{\"z\":0}")]),
                    vals(&["6"])
                ),
            ]
        );
        // The blank line between the first two rows is not part of any range.
        assert_eq!(tabular(&batches[0]).0[0].ranges[..2], [(0, 22), (23, 45)]);
    }

    #[test]
    fn by_keys_without_keys_is_one_batch() {
        let dir = TempDir::new().expect("tempdir");
        let path = write(&dir, "a.csv", b"a\n1\n2\n");
        let batches = partition_by_keys(&[csv_source(&path)], &[]).expect("by keys");
        assert_eq!(batches.len(), 1);
        assert_eq!(tabular(&batches[0]).3, Some(&BTreeMap::new()));
        assert_eq!(batches[0].item_count(), 2);
    }

    #[test]
    fn by_keys_missing_key_column_errors() {
        let dir = TempDir::new().expect("tempdir");
        let csv_path = write(&dir, "a.csv", b"a,b\n1,2\n");
        let keys = vec!["a".to_string(), "c".to_string()];
        match partition_by_keys(&[csv_source(&csv_path)], &keys) {
            Err(PartitionError::MissingKeyColumn { path, column, line }) => {
                assert_eq!((path, column.as_str(), line), (csv_path.clone(), "c", None));
            }
            other => panic!("expected MissingKeyColumn, got {other:?}"),
        }
        let jsonl_path = write(&dir, "a.jsonl", b"{\"a\":1,\"c\":2}\n\n{\"a\":1}\n");
        match partition_by_keys(&[jsonl_source(&jsonl_path)], &keys) {
            Err(PartitionError::MissingKeyColumn { path, column, line }) => {
                assert_eq!((path, column.as_str(), line), (jsonl_path, "c", Some(3)));
            }
            other => panic!("expected MissingKeyColumn, got {other:?}"),
        }
    }

    #[test]
    fn by_keys_bad_json_lines_error_with_line_numbers() {
        let dir = TempDir::new().expect("tempdir");
        let keys = vec!["a".to_string()];
        for (data, bad_line) in [
            (&b"{\"a\":1}\n{\"a\":\n"[..], 2),
            (&b"\n\n[1,2]\n"[..], 3),
            (&b"{\"a\":1} x\n"[..], 1),
        ] {
            let path = write(&dir, "bad.jsonl", data);
            match partition_by_keys(&[jsonl_source(&path)], &keys) {
                Err(PartitionError::JsonLine { line, .. }) => assert_eq!(line, bad_line),
                other => panic!("expected JsonLine error, got {other:?}"),
            }
        }
    }

    #[test]
    fn by_keys_handles_utf8_bom() {
        let dir = TempDir::new().expect("tempdir");
        let csv_path = write(&dir, "bom.csv", b"\xEF\xBB\xBFk,v\nx,1\n");
        let jsonl_path = write(&dir, "bom.jsonl", b"\xEF\xBB\xBF{\"k\":\"x\",\"v\":2}\n");
        let keys = vec!["k".to_string()];
        let batches = partition_by_keys(&[csv_source(&csv_path), jsonl_source(&jsonl_path)], &keys)
            .expect("by keys");
        assert_eq!(batches.len(), 1);
        let (segments, rows, ..) = tabular(&batches[0]);
        assert_eq!(rows, 2);
        assert_eq!(segments[0].header_end, 7);
        assert_eq!(segments[1].ranges, vec![(0, 19)]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(150))]

        #[test]
        fn by_keys_groups_every_row_once(
            (columns, key_columns, specs) in (1usize..=2)
                .prop_flat_map(|k| (Just(k), k..=k + 1))
                .prop_flat_map(|(k, c)| (Just(c), Just(k), prop::collection::vec(file_spec(c, k), 1..=3))),
            buffer_bytes in prop::sample::select(vec![1usize, 2, 3, 5, 16, 64]),
        ) {
            let dir = TempDir::new().expect("tempdir");
            let sources = write_specs(&dir, &specs, columns);
            let keys: Vec<String> = header(columns).into_iter().take(key_columns).collect();
            let batches = partition_by_keys(&sources, &keys).expect("by keys");
            let again = partition_by_keys(&sources, &keys).expect("by keys");
            prop_assert_eq!(&batches, &again);
            let small = partition_by_keys_with(&sources, &keys, buffer_bytes).expect("by keys");
            prop_assert_eq!(&batches, &small);
            check_structure(&batches, &sources);

            // Expected: original rows grouped by key, in order of first appearance.
            let mut expected: Vec<(Vec<String>, Vec<Vec<String>>)> = Vec::new();
            for row in specs.iter().flat_map(|s| s.rows.iter()) {
                let key = row[..key_columns].to_vec();
                match expected.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, rows)) => rows.push(row.clone()),
                    None => expected.push((key, vec![row.clone()])),
                }
            }
            let actual: Vec<(Vec<String>, Vec<Vec<String>>)> = batches
                .iter()
                .map(|b| {
                    let map = tabular(b).3.expect("key map");
                    let key = keys.iter().map(|k| map[k].clone()).collect();
                    (key, batch_rows(b))
                })
                .collect();
            prop_assert_eq!(actual, expected);
        }
    }
}
