"""Azure ML ParallelRunStep entry script: classifies iris measurements with the registered
model "iris-prs", one mini-batch per site (partition_keys=["site"]).

Written as for Azure (the batch-inference notebooks' score.py): it runs unchanged on Azure ML
and on stepgraph, which ships the `azureml.core` and `azureml_user` modules it imports.
"""
import argparse
import math
import pickle

from azureml.core import Run
from azureml.core.model import Model
from azureml_user.parallel_run import EntryScript


def init():
    global model, min_confidence, logger, run_context
    parser = argparse.ArgumentParser()
    parser.add_argument("--min_confidence", type=float, default=0.5)
    args, _ = parser.parse_known_args()
    min_confidence = args.min_confidence

    # On Azure: the registered model, downloaded under AZUREML_MODEL_DIR.
    model_path = Model.get_model_path("iris-prs")
    with open(model_path, "rb") as f:
        model = pickle.load(f)
    logger = EntryScript().logger
    logger.info("loaded %s model from %s", model["kind"], model_path)
    run_context = Run.get_context()


def predict(row):
    """Nearest centroid; confidence is the inverse-distance share of the winner."""
    x = [float(row[name]) for name in model["features"]]
    dist = {
        species: math.dist(x, centre) for species, centre in model["centroids"].items()
    }
    best = min(dist, key=dist.get)
    weights = {s: 1.0 / (d + 1e-9) for s, d in dist.items()}
    return best, weights[best] / sum(weights.values())


def run(mini_batch, mini_batch_context):
    # mini_batch is a pandas DataFrame with the partition values as columns (site, day).
    site = mini_batch_context.partition_key_value["site"]
    logger.info("site %s: %d rows (%r)", site, len(mini_batch), mini_batch_context.dataset)
    predicted = mini_batch.apply(predict, axis=1, result_type="expand")
    result = mini_batch[["sample", "site", "day", "species"]].copy()
    result["predicted"] = predicted[0]
    result["confidence"] = predicted[1].round(3)
    result = result[result["confidence"] >= min_confidence]
    correct = int((result["predicted"] == result["species"]).sum())
    run_context.log("rows_scored", len(result))
    run_context.log_row("site_accuracy", site=site, accuracy=correct / max(len(result), 1))
    return result
