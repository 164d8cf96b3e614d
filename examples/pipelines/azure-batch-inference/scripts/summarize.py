"""Summarise the predictions of the score-iris step into report.json: per site, how many
samples were scored and how many the model got right. On Azure: a PythonScriptStep."""
import json
import os
import sys

predictions_dir, report_dir = sys.argv[1], sys.argv[2]
sites = {}
with open(os.path.join(predictions_dir, "parallel_run_step.txt")) as f:
    for line in f:
        # Azure's append_row text: the DataFrame's values joined by spaces.
        sample, site, day, species, predicted, confidence = line.split()
        s = sites.setdefault(site, {"scored": 0, "correct": 0})
        s["scored"] += 1
        s["correct"] += predicted == species
total = sum(s["scored"] for s in sites.values())
correct = sum(s["correct"] for s in sites.values())
report = {"samples": total, "accuracy": round(correct / max(total, 1), 3), "sites": sites}
os.makedirs(report_dir, exist_ok=True)
with open(os.path.join(report_dir, "report.json"), "w") as f:
    json.dump(report, f, indent=2, sort_keys=True)
print(f"summarised {total} predictions, accuracy {report['accuracy']}")
