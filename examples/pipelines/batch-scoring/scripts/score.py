"""Azure ML ParallelRunStep entry script: scores each review file by counting
positive and negative words. Runs unchanged on Azure and on stepgraph."""
import argparse
import os

from azureml_user.parallel_run import EntryScript

POSITIVE = {"great", "excellent", "love", "wonderful", "fast", "reliable", "happy"}
NEGATIVE = {"bad", "slow", "broken", "awful", "hate", "late", "refund"}


def init():
    global threshold, logger
    parser = argparse.ArgumentParser()
    parser.add_argument("--threshold", type=float, default=0.0)
    args, _ = parser.parse_known_args()
    threshold = args.threshold
    logger = EntryScript().logger
    logger.info("scoring with threshold %s", threshold)


def run(mini_batch):
    results = []
    for path in mini_batch:
        with open(path) as f:
            words = f.read().split()
        score = (sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words)) / max(len(words), 1)
        label = "positive" if score > threshold else "negative"
        results.append(f"{os.path.basename(path)} {score:.4f} {label}")
    return results
