#!/usr/bin/env bash
# Peak memory of the engine process while a ParallelRunStep processes a >= 2 GB CSV.
#
#   input: one CSV of ~2.2 GB (25 M rows of ~87 bytes), generated under /tmp, removed after;
#   step:  examples/bench_python_entry.rs -- ParallelRunStep, TabularDataset, mini_batch_size
#          "1MB", process_count_per_node 2, append_row output (one short row per input row),
#          fresh store;
#   entry: Python (bench/py/rows.py; the Python workers read their rows themselves from the
#          mini-batch byte ranges), then the in-process Rust entry (--rust-entry: the engine
#          process parses the rows itself) for comparison. Set ENTRIES="python" or "rust" to
#          run only one.
#
# Measured: /usr/bin/time -v "Maximum resident set size" of the engine process (NOT the
# Python children: they are separate processes), plus the engine's own peak VmRSS / RssAnon /
# RssFile sampled every 50 ms from /proc/self/status (RssFile = file pages mapped into the
# process, e.g. by mmap'ed hashing; RssAnon = heap and stacks).
#
# Usage (from the repo root): bash bench/tabular_rss.sh
# Goal (issue): peak RSS <= 256 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRIES=${ENTRIES:-"python rust"}
ROWS=${ROWS:-25000000}
source bench/common.sh
need_gnu_time


bench_setup bench_python_entry rss
mkdir -p "$DIR/src"
cp bench/py/rows.py "$DIR/src/"
echo "generating $ROWS rows in $DIR/big.csv ..."
python3 - "$DIR/big.csv" "$ROWS" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
step = 100_000
with open(path, "w") as f:
    f.write("id,name,city,amount,comment\n")
    for start in range(0, n, step):
        f.write("".join(
            "%d,customer_%06d,city_%03d,%d.%02d,free text comment for row %010d padding\n"
            % (i, i % 1000003, i % 997, i % 100000, i % 100, i)
            for i in range(start, min(n, start + step))))
PY
ls -l "$DIR/big.csv" | awk '{printf "input: %.2f GB\n", $5 / 1e9}'
# The stat memo skips files modified in the last 2 s (racy-git rule): let it settle, so that
# the --prehash diagnostic below really finds the hash in the memo.
sleep 3

run_case() {  # ENTRY LABEL [--prehash]
  local entry=$1 label=$2 prehash=${3:-}
  local args
  if [ "$entry" = python ]; then args=(--source-dir "$DIR/src" --entry rows.py); else args=(--rust-entry); fi
  rm -rf "$DIR/store"
  echo "== $entry entry, $label =="
  if [ -n "$prehash" ]; then
    "$BIN" --store "$DIR/store" --csv "$DIR/big.csv" --hash-only "${args[@]}"
  fi
  /usr/bin/time -v -o "$DIR/time.txt" "$BIN" --store "$DIR/store" --csv "$DIR/big.csv" \
    --mini-batch-size 1MB --workers 2 --sample-rss "${args[@]}" > "$DIR/out-path.txt"
  local out
  out=$(cat "$DIR/out-path.txt")
  echo "output: $(wc -l < "$out") rows, $(stat -c %s "$out") bytes; first: $(head -1 "$out"); last: $(tail -1 "$out")"
  grep -E "Elapsed|Maximum resident|File system (in|out)puts" "$DIR/time.txt" | sed 's/^\s*/  /'
  rm -rf "$DIR/store"
}

for entry in $ENTRIES; do
  run_case "$entry" "fresh store (the measured case)"
  # Diagnostic: same run, but the input's hash is already in the store's stat memo (filled
  # by a separate process), so the run does not hash (mmap) the 2 GB input itself.
  run_case "$entry" "diagnostic: input hash already memoised" --prehash
done
