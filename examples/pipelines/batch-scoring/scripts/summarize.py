"""Summarise the scores gathered by the score-reviews step into report.json."""
import json
import os
import sys

scores_dir, report_dir = sys.argv[1], sys.argv[2]
counts = {}
total = 0
with open(os.path.join(scores_dir, "parallel_run_step.txt")) as f:
    for line in f:
        name, score, label = line.split()
        counts[label] = counts.get(label, 0) + 1
        total += 1
os.makedirs(report_dir, exist_ok=True)
with open(os.path.join(report_dir, "report.json"), "w") as f:
    json.dump({"reviews": total, "labels": counts}, f, indent=2, sort_keys=True)
print(f"summarised {total} reviews: {counts}")
