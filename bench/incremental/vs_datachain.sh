#!/usr/bin/env bash
# stepgraph's incremental ParallelRunStep vs DataChain's delta processing, side by side on the
# same files, in the same run (issue 11's comparison).
#
#   N files of 1 KiB (datachain/make_files.py create), a Python function that reads the file,
#   sleeps 1 ms and returns one row per file. Then datachain/make_files.py mutate adds 1% new
#   files spread through the folder (insertions in the middle of the sorted order) and
#   rewrites 0.5% of the files; both tools rerun.
#
#   DataChain (PINNED version below, in its own venv under /tmp): read_storage(update=True,
#   delta=True).map(...).save(...), each phase its own process: datachain/datachain_delta.py.
#   stepgraph: the release binary, a JSON spec with "incremental": true, mini_batch_size
#   SIZE (default 10), 2 workers.
#
# Usage (from the repo root): bash bench/incremental/vs_datachain.sh [N] [SIZE]
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-20000}
SIZE=${2:-10}
DATACHAIN_VERSION=0.62.0
VENV=/tmp/dc-venv-$DATACHAIN_VERSION
if ! "$VENV/bin/python" -c "import datachain" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "datachain==$DATACHAIN_VERSION"
fi
source bench/common.sh
stepgraph_release
HERE=$PWD/bench/incremental
DIR=$(mktemp -d /tmp/sg-vs-dc-XXXXXX)
trap 'rm -rf "$DIR"' EXIT

# DataChain: its script runs full, mutate, delta, no-op in one go.
python3 "$HERE/datachain/make_files.py" create "$DIR/dc-data" "$N" >/dev/null
"$VENV/bin/python" "$HERE/datachain/datachain_delta.py" bench "$DIR/dc-data" "$DIR/dc-work" > "$DIR/dc.json"
python3 - "$DIR/dc.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("datachain %s: full_s=%.2f (%d files) delta_s=%.2f (%d files) noop_s=%.2f" % (
    r["version"], r["full_s"], r["full_rows_processed"], r["delta_s"],
    r["delta_rows_processed"], r["noop_s"]))
PY

# stepgraph on the same files, the same mutation.
python3 "$HERE/datachain/make_files.py" create "$DIR/sg/data" "$N" >/dev/null
mkdir -p "$DIR/sg/src"
cat > "$DIR/sg/src/score.py" <<'PY'
import hashlib, os, time

def run(mini_batch):
    out = []
    for p in mini_batch:
        data = open(p, "rb").read()
        time.sleep(0.001)
        out.append("%s %d %s" % (os.path.basename(p), len(data), hashlib.blake2b(data).hexdigest()[:16]))
    return out
PY
cat > "$DIR/sg/pipeline.json" <<JSON
{"name": "vs-datachain",
 "datasets": {"files": {"type": "file", "path": "data"}},
 "steps": [{"name": "score", "type": "parallel_run", "inputs": ["files"], "output": "rows",
   "parallel_run_config": {"source_directory": "src", "entry_script": "score.py",
     "mini_batch_size": "$SIZE", "error_threshold": 0, "process_count_per_node": 2,
     "incremental": true}}]}
JSON
cd "$DIR/sg"
full=$(secs "$BIN" --store store run pipeline.json)
python3 "$HERE/datachain/make_files.py" mutate data --add-pct 1 --modify-pct 0.5 --round 1 >/dev/null
sleep 3
incr=$(secs "$BIN" --store store run pipeline.json)
line=$(grep -o 'incremental: [0-9,]* reused, [0-9,]* to run (of [0-9,]* mini-batches)' "$DIR/last.txt" | tail -1 || true)
noop=$(secs "$BIN" --store store run pipeline.json)
echo "stepgraph: full_s=$full incremental_s=$incr noop_s=$noop mini_batch_size=$SIZE; $line"
