#!/usr/bin/env python3
"""Print the median (and mean) of each criterion benchmark's latest run, read from
`$CARGO_TARGET_DIR/criterion/**/new/estimates.json` (criterion's headline interval is the
slope or mean; bench/README.md reports medians).

    python3 bench/criterion_medians.py [FILTER]      # e.g. graph, hashing, parallel_run
"""
import json
import os
import sys

root = os.path.join(os.environ.get("CARGO_TARGET_DIR", "/tmp/target-bench"), "criterion")
flt = sys.argv[1] if len(sys.argv) > 1 else ""
rows = []
for dirpath, _, files in os.walk(root):
    if os.path.basename(dirpath) == "new" and "estimates.json" in files:
        name = os.path.relpath(os.path.dirname(dirpath), root)
        if flt in name:
            e = json.load(open(os.path.join(dirpath, "estimates.json")))
            rows.append((name, e["median"]["point_estimate"], e["mean"]["point_estimate"]))
for name, med, mean in sorted(rows):
    unit, div = ("s", 1e9) if med >= 1e9 else ("ms", 1e6)
    print(f"{name:55s} median {med / div:10.4f} {unit}   mean {mean / div:10.4f} {unit}")
