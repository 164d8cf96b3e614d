def init():
    pass


def run(mini_batch):
    # One short row per input row (a DataFrame: Azure's form for tables).
    return (mini_batch["id"].astype(str) + " " + mini_batch["shop"]).tolist()
