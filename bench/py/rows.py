"""Entry script for bench/tabular_rss.sh: one short row (`id,number_of_columns`) per input
row. The harness hands run() a pandas DataFrame (the default `tabular_format`; pandas must be
installed) or, with `tabular_format` records, a list of dicts (one per CSV row); either is
read by the worker from the mini-batch's byte ranges, so the engine never holds the rows."""


def init():
    pass


def run(mini_batch):
    if hasattr(mini_batch, "columns"):  # a pandas DataFrame
        width = len(mini_batch.columns)
        return ["%s,%d" % (i, width) for i in mini_batch["id"].tolist()]
    return ["%s,%d" % (row["id"], len(row)) for row in mini_batch]
