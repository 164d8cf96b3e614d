"""The README's worker protocol examples, sent to the harness.

The ``json`` blocks of the README section "The worker protocol" hold one
message per line; stepgraph's Rust types are checked against the same lines
(steps/src/parallel_run/protocol/tests.rs).  Here every example request is
sent to ``stepgraph_worker.py`` (with its paths pointed at real files) and
every reply must have the shape of a documented reply of its type: the same
keys (none missing, none undocumented) with values of the same JSON types.
Between them, the requests draw every documented reply type.
"""
import base64
import json
import os
import unittest

from test_worker import NO_PANDAS, WorkerTestCase

README = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
    "README.md",
)

REQUEST_TYPES = ("init", "run", "shutdown")

EXAMPLE_SCRIPT = """
import os

def run(mini_batch):
    if isinstance(mini_batch, list) and mini_batch and isinstance(mini_batch[0], dict):
        return [{"id": r["id"], "score": r["score"]} for r in mini_batch]
    if any(os.path.basename(p) == "boom.txt" for p in mini_batch):
        raise ValueError("boom")
    # A name that is not UTF-8 arrives as surrogates: rows must be UTF-8.
    names = [os.path.basename(p).encode("utf-8", "replace").decode("utf-8") for p in mini_batch]
    return ["%s %d" % (n, os.path.getsize(p)) for n, p in zip(names, mini_batch)]
"""

PARTITIONED_SCRIPT = """
def run(mini_batch, mini_batch_context):
    key = mini_batch_context.partition_key_value
    values = mini_batch_context.dataset.partition_values()
    assert mini_batch_context.dataset.to_path() == mini_batch, mini_batch_context.dataset
    return ["%s %s %s" % (key["user"], key["genres"], v["season"]) for v in values]
"""

FAILING_INIT_SCRIPT = """
def init():
    raise RuntimeError("no model")

def run(mini_batch):
    return []
"""


def readme_examples():
    """The JSON lines of the json blocks in the README's protocol section."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    start = text.index("### The worker protocol")
    end = text.find("\n### ", start + 4)
    section = text[start:] if end < 0 else text[start:end]
    examples, in_json = [], False
    for line in (raw.strip() for raw in section.splitlines()):
        if line == "```json":
            in_json = True
        elif line == "```":
            in_json = False
        elif line and in_json:
            examples.append(json.loads(line))
    return examples


def json_type(value):
    for kind, name in ((bool, "bool"), (int, "int"), (str, "string"), (list, "list"), (dict, "object")):
        if isinstance(value, kind):
            return name
    return "null"


class ReadmeExampleTests(WorkerTestCase):
    def setUp(self):
        super().setUp()
        examples = readme_examples()
        self.requests = [m for m in examples if m["type"] in REQUEST_TYPES]
        self.replies = {}
        for message in examples:
            if message["type"] not in REQUEST_TYPES:
                self.replies.setdefault(message["type"], []).append(message)
        self.seen = set()

    def request(self, type_, **where):
        found = [
            m for m in self.requests
            if m["type"] == type_ and all(m.get(k) == v for k, v in where.items())
        ]
        self.assertEqual(len(found), 1, "README examples of %s %r" % (type_, where))
        return json.loads(json.dumps(found[0]))  # a copy to point at real files

    def assertDocumented(self, reply, kind):
        """`reply` is of type `kind` and has the shape of one documented reply of it."""
        self.assertEqual(reply.get("type"), kind, reply)
        documented = self.replies.get(kind)
        self.assertTrue(documented, "no README example of a %s reply" % kind)
        shapes = []
        for example in documented:
            shape = dict((k, json_type(v)) for k, v in example.items())
            got = dict((k, json_type(v)) for k, v in reply.items())
            lists = [k for k, v in example.items() if isinstance(v, list)]
            if got == shape and all(
                set(map(json_type, reply[k])) <= set(map(json_type, example[k])) for k in lists
            ):
                self.seen.add(kind)
                return
            shapes.append(shape)
        self.fail("%r has none of the documented shapes %r" % (reply, shapes))

    def init(self, source, **fields):
        message = self.request("init")
        message.update(
            entry_script=self.script(source),
            source_directory=self.scripts,
            output_dir=self.out,
            working_dir=self.work,
            log_dir=self.logs,
            side_inputs=dict((k, self.write("data/" + k, "x")) for k in message["side_inputs"]),
        )
        message.update(fields)
        worker = self.spawn(NO_PANDAS)
        return worker, worker.request(message)

    def test_every_example_request_draws_a_documented_reply(self):
        worker, reply = self.init(EXAMPLE_SCRIPT)
        self.assertDocumented(reply, "ready")

        run = self.request("run", kind="files", index=7)
        folder = os.fsencode(self.tmp)
        named = []
        for i, path in enumerate(run["files"]):
            name = folder + b"/" + (b"a%d.txt" % i if isinstance(path, str) else b"b\xff.txt")
            with open(name, "wb") as f:
                f.write(b"x" * i)
            named.append(os.fsdecode(name) if isinstance(path, str) else {"b64": base64.b64encode(name).decode("ascii")})
        run["files"] = named
        reply = worker.request(run)
        self.assertDocumented(reply, "result")
        self.assertEqual((reply["index"], reply["count"]), (run["index"], len(named)))

        run["files"] = [self.write("boom.txt", "")]
        reply = worker.request(run)
        self.assertDocumented(reply, "error")
        self.assertEqual(reply["index"], run["index"])

        reply = worker.request(self.request("shutdown"))
        self.assertDocumented(reply, "bye")

        # Tabular rows, gathered as CSV: the result carries its columns.
        worker, reply = self.init(EXAMPLE_SCRIPT, append_row_format="csv")
        self.assertDocumented(reply, "ready")
        run = self.request("run", kind="tabular")
        lines = [b"id,score\n", b"1,0.5\n", b"2,0.25\n"]
        for segment in run["segments"]:
            segment.update(
                path=self.write("data/x.csv", b"".join(lines), "wb"),
                format="csv",
                header_end=len(lines[0]),
                ranges=[[len(lines[0]), len(lines[0]) + len(lines[1])], [len(lines[0]) + len(lines[1]), len(b"".join(lines))]],
            )
        reply = worker.request(run)
        self.assertDocumented(reply, "result")
        self.assertEqual(reply["columns"], ["id", "score"])
        self.assertEqual(reply["rows"], ["1,0.5", "2,0.25"])

        # Files cut by partition_keys, with each file's partition values.
        worker, reply = self.init(PARTITIONED_SCRIPT)
        self.assertDocumented(reply, "ready")
        run = self.request("run", kind="files", index=9)
        run["files"] = [self.write("data/jazz.wav", "x")]
        reply = worker.request(run)
        self.assertDocumented(reply, "result")
        self.assertEqual(reply["rows"], ["ana jazz summer"])

        # A request the worker does not know.
        reply = worker.request({"type": "hello"})
        self.assertDocumented(reply, "protocol_error")

        worker, reply = self.init(FAILING_INIT_SCRIPT)
        self.assertDocumented(reply, "init_failed")

        self.assertEqual(self.seen, set(self.replies), "every documented reply was drawn")


if __name__ == "__main__":
    unittest.main()
