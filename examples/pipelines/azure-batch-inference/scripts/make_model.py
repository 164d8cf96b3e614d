"""Train the tiny nearest-centroid iris model and pickle it to models/iris-centroids.pkl.

On Azure this is the notebook's training cell followed by
`Model.register(ws, model_path="models/iris-centroids.pkl", model_name="iris-prs")`.
The model is a plain dict (no scikit-learn needed to load it): the feature names and, per
species, the mean of each feature over the training rows below.

    python3 scripts/make_model.py        # from the example's folder
"""
import os
import pickle

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

# A few rows of Fisher's iris data, enough for three centroids.
TRAIN = {
    "setosa": [(5.1, 3.5, 1.4, 0.2), (4.9, 3.0, 1.4, 0.2), (4.7, 3.2, 1.3, 0.2), (5.0, 3.6, 1.4, 0.2)],
    "versicolor": [(7.0, 3.2, 4.7, 1.4), (6.4, 3.2, 4.5, 1.5), (6.9, 3.1, 4.9, 1.5), (5.5, 2.3, 4.0, 1.3)],
    "virginica": [(6.3, 3.3, 6.0, 2.5), (5.8, 2.7, 5.1, 1.9), (7.1, 3.0, 5.9, 2.1), (6.5, 3.0, 5.8, 2.2)],
}


def centroid(rows):
    return [round(sum(r[i] for r in rows) / len(rows), 4) for i in range(len(FEATURES))]


model = {
    "kind": "nearest-centroid",
    "features": FEATURES,
    "centroids": {species: centroid(rows) for species, rows in sorted(TRAIN.items())},
}
here = os.path.dirname(os.path.abspath(__file__))
path = os.path.join(here, "..", "models", "iris-centroids.pkl")
with open(path, "wb") as f:
    pickle.dump(model, f, protocol=4)
print(f"wrote {os.path.normpath(path)}: {model['centroids']}")
