#!/usr/bin/env bash
# Cold hashing of input files: stepgraph's hashing (examples/hash_files.rs, the engine's own
# code path) vs the `b3sum` tool, process against process, on the same files, in one run.
#
#   (a) one 1 GiB file             -> engine: blake3 mmap + rayon (Store::hash_file, verify)
#   (b) 2,000 files of 256 KiB     -> engine: rayon over files, each read whole and hashed
#
# All files are in the page cache for both tools (they are read once before timing, and the
# machine has far more RAM than the 1.5 GiB of data), so this measures hashing, not the disk.
#
# Commands timed by bench/interleave.py (no shell; wall time around each process), RUNS runs
# each, interleaved run by run (A B C, B C A, ...) so that load bursts from other work on a
# shared machine hit all commands alike; reported: median (and min).
#   b3sum FILE...
#   hash_files FILE...                  (fresh sled store, Store::hash_file(path, true))
#   hash_files --mode uncached FILE...  (hash_file_uncached, no store)
#
# Usage (from the repo root): bash bench/hash_vs_b3sum.sh [RUNS]
# Goal (issue): stepgraph >= 0.9x b3sum throughput.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-30}
source bench/common.sh

need() { command -v "$1" >/dev/null 2>&1; }
if ! need b3sum; then apt-get install -y b3sum >/dev/null 2>&1 || cargo install b3sum; fi

bench_setup hash_files hash
echo "generating data in $DIR ..."
head -c 1G /dev/urandom > "$DIR/big.bin"
mkdir -p "$DIR/small"
for i in $(seq -w 0 1999); do head -c 256K /dev/urandom > "$DIR/small/f$i.bin"; done
SMALL=$(ls "$DIR"/small/*.bin | tr '\n' ' ')

echo "warming the page cache and checking that the hashes agree ..."
cat "$DIR/big.bin" "$DIR"/small/*.bin > /dev/null
diff <(b3sum "$DIR/big.bin" $SMALL) <("$BIN" "$DIR/big.bin" $SMALL)
diff <(b3sum "$DIR/big.bin" $SMALL) <("$BIN" --mode uncached "$DIR/big.bin" $SMALL)
if command -v fincore >/dev/null; then fincore "$DIR/big.bin" | tail -1; fi

echo "b3sum: $(b3sum --version); cores: $(nproc); load: $(cut -d' ' -f1-3 /proc/loadavg)"
for case in big small; do
  if [ $case = big ]; then FILES="$DIR/big.bin"; else FILES=$SMALL; fi
  echo "$case: $RUNS interleaved runs per command (load: $(cut -d' ' -f1-3 /proc/loadavg))"
  python3 bench/interleave.py --runs "$RUNS" --warmup 2 --json "$DIR/$case.json" \
    b3sum "b3sum $FILES" \
    stepgraph_store "$BIN $FILES" \
    stepgraph_uncached "$BIN --mode uncached $FILES" > /dev/null
done

python3 - "$DIR" <<'EOF'
import json, statistics, sys
d = sys.argv[1]
sizes = {"big": 1 << 30, "small": 2000 * (256 << 10)}
labels = {"big": "(a) 1 x 1 GiB", "small": "(b) 2000 x 256 KiB"}
for case in ("big", "small"):
    times = json.load(open(f"{d}/{case}.json"))
    print(f"\n{labels[case]} ({sizes[case] / 1e6:.0f} MB), {len(times['b3sum'])} runs each")
    base = statistics.median(times["b3sum"])
    for name, ts in times.items():
        m = statistics.median(ts)
        mbs = sizes[case] / m / 1e6
        print(f"  {name:20s} median {m * 1000:8.1f} ms  min {min(ts) * 1000:8.1f} ms  "
              f"{mbs:8.0f} MB/s  throughput vs b3sum {base / m:5.2f}x")
EOF
