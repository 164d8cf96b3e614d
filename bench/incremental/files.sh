#!/usr/bin/env bash
# Incremental ParallelRunStep over a growing folder of files (issue 11's benchmark).
#
#   20,000 small files (FILES), Python entry sleeping 1 ms per file (score_files.py), mini-batches of
#   SIZE files (default 10, Azure's default), 2 workers, the release `stepgraph` binary and a
#   JSON spec with "incremental": true.
#
#   1. full run, fresh store                       -> full_s
#   2. rerun with no change (the step is reused)   -> noop_s (median of 5)
#   3. add 1% new files (a new day's folder) and modify 0.5% (EDITS: spread evenly over the
#      folder, the worst case, or the most recent files), rerun
#                                                  -> incremental_s (and mini-batches run/reused)
#   4. the same inputs from scratch, fresh store   -> checks the output is byte-identical
#   5. today's no-op rerun: the same step without "incremental", run once, then 5 no-op
#      reruns                                      -> noop_plain_s (median of 5)
#
# Usage (from the repo root): bash bench/incremental/files.sh [FILES] [SIZE] [spread|recent]
# Goal (issue 11): incremental_s <= 5% of full_s; noop_s as fast as today's no-op rerun.
set -euo pipefail
cd "$(dirname "$0")/../.."
FILES=${1:-20000}
SIZE=${2:-10}
EDITS=${3:-spread}
source bench/common.sh
stepgraph_release
DIR=$(mktemp -d /tmp/sg-incr-XXXXXX)
trap 'rm -rf "$DIR"' EXIT
python3 bench/incremental/make_files.py create "$DIR/data" "$FILES"
mkdir -p "$DIR/src"
cp bench/incremental/score_files.py "$DIR/src/"
cat > "$DIR/pipeline.json" <<JSON
{"name": "incremental-files",
 "datasets": {"docs": {"type": "file", "path": "data", "pattern": "**/*.txt"}},
 "steps": [{"name": "score", "type": "parallel_run", "inputs": ["docs"], "output": "scores",
   "parallel_run_config": {"source_directory": "src", "entry_script": "score_files.py",
     "mini_batch_size": "$SIZE", "error_threshold": 0, "process_count_per_node": 2,
     "incremental": true}}]}
JSON
median5() { local xs=() i; for i in 1 2 3 4 5; do xs+=("$(secs "$@")"); done; printf '%s\n' "${xs[@]}" | sort -n | sed -n 3p; }
cd "$DIR"
full=$(secs "$BIN" --store store run pipeline.json)
noop=$(median5 "$BIN" --store store run pipeline.json)
sed 's/"incremental": true/"incremental": false/' pipeline.json > plain.json
"$BIN" --store plain run plain.json >/dev/null 2>&1
noop_plain=$(median5 "$BIN" --store plain run plain.json)
python3 "$OLDPWD/bench/incremental/make_files.py" edit data "$FILES" 1 0.5 "$EDITS"
# Data lands before the scheduled rerun: files modified within the last 2 s are rehashed at
# every look (the racy-git rule of the stat memo).
sleep 3
incr=$(secs "$BIN" --store store run pipeline.json)
line=$(grep -o 'incremental: [0-9,]* reused, [0-9,]* to run (of [0-9,]* mini-batches)' last.txt | tail -1 || true)
"$BIN" --store store get score out-incr >/dev/null
fresh=$(secs "$BIN" --store fresh run pipeline.json)
"$BIN" --store fresh get score out-fresh >/dev/null
cmp out-incr/parallel_run_step.txt out-fresh/parallel_run_step.txt
echo "files=$FILES mini_batch_size=$SIZE edits=$EDITS full_s=$full noop_s=$noop noop_plain_s=$noop_plain incremental_s=$incr fresh_after_edit_s=$fresh"
echo "$line"
echo "incremental/full = $(echo "scale=4; $incr / $full" | bc)"
echo "output after the edits: byte-identical to a from-scratch run"
