#!/usr/bin/env bash
# Incremental ParallelRunStep over a CSV that grows (issue 11's benchmark, tabular half).
#
#   a CSV of SIZE_MB (default 1024 MB: 2 million rows of ~530 bytes), Python entry returning
#   one short row per input row (score_rows.py, pandas), mini_batch_size "1MB" (Azure's
#   default for tables), 2 workers, "incremental": true, the release binary.
#
#   1. full run, fresh store                          -> full_s
#   2. rerun with no change (the step is reused)      -> noop_s
#   3. append 1% rows, rerun                          -> incremental_s (mini-batches run/reused)
#   4. the same CSV from scratch, fresh store         -> checks the output is byte-identical
#
# Usage (from the repo root): bash bench/incremental/csv.sh [SIZE_MB]
# Goal (issue 11): incremental_s <= 5% of full_s.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE_MB=${1:-1024}
source bench/common.sh
stepgraph_release
DIR=$(mktemp -d /tmp/sg-incr-csv-XXXXXX)
trap 'rm -rf "$DIR"' EXIT
python3 bench/incremental/make_csv.py create "$DIR/table.csv" "$SIZE_MB"
mkdir -p "$DIR/src"
cp bench/incremental/score_rows.py "$DIR/src/"
cat > "$DIR/pipeline.json" <<JSON
{"name": "incremental-csv",
 "datasets": {"table": {"type": "tabular", "path": "table.csv", "format": "csv"}},
 "steps": [{"name": "score", "type": "parallel_run", "inputs": ["table"], "output": "scores",
   "parallel_run_config": {"source_directory": "src", "entry_script": "score_rows.py",
     "mini_batch_size": "1MB", "error_threshold": 0, "process_count_per_node": 2,
     "incremental": true}}]}
JSON
cd "$DIR"
full=$(secs "$BIN" --store store run pipeline.json)
noop=$(secs "$BIN" --store store run pipeline.json)
python3 "$OLDPWD/bench/incremental/make_csv.py" append table.csv 1
# Data lands before the scheduled rerun: a file modified within the last 2 s is rehashed at
# every look (the racy-git rule of the stat memo), which would add a read of the CSV.
sleep 3
incr=$(secs "$BIN" --store store run pipeline.json)
line=$(grep -o 'incremental: [0-9,]* reused, [0-9,]* to run (of [0-9,]* mini-batches)' last.txt | tail -1 || true)
"$BIN" --store store get score out-incr >/dev/null
fresh=$(secs "$BIN" --store fresh run pipeline.json)
"$BIN" --store fresh get score out-fresh >/dev/null
cmp out-incr/parallel_run_step.txt out-fresh/parallel_run_step.txt
echo "csv_mb=$SIZE_MB full_s=$full noop_s=$noop incremental_s=$incr fresh_after_append_s=$fresh"
echo "$line"
echo "incremental/full = $(echo "scale=4; $incr / $full" | bc)"
echo "output after the append: byte-identical to a from-scratch run"
