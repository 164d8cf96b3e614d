"""Entry script for bench/tabular_rss.sh: one short row (`id,number_of_columns`) per input
row. Without pandas the harness hands run() a list of dicts (one per CSV row), read by the
worker from the mini-batch's byte ranges; the engine never holds the rows."""


def init():
    pass


def run(mini_batch):
    return ["%s,%d" % (row["id"], len(row)) for row in mini_batch]
