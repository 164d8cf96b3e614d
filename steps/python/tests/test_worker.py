"""Tests of the stepgraph ParallelRunStep worker harness (protocol version 1).

Each test starts ``stepgraph_worker.py`` as a subprocess (with the interpreter
running the tests), speaks the JSON-lines protocol to it and checks replies.

Run from steps/python:  python3 -m unittest discover -s tests -v

DataFrame tests are skipped when pandas is not installed; the list-of-dicts
path is forced with STEPGRAPH_NO_PANDAS=1 so it is tested either way.
"""
import base64
import importlib.util
import json
import os
import queue
import subprocess
import sys
import tempfile
import textwrap
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
HARNESS = os.path.join(os.path.dirname(HERE), "stepgraph_worker.py")
HAVE_PANDAS = importlib.util.find_spec("pandas") is not None
NO_PANDAS = {"STEPGRAPH_NO_PANDAS": "1"}
TIMEOUT = 15


class WorkerProcess(object):
    """One harness subprocess: send dicts, read reply dicts one line at a time."""

    def __init__(self, env=None):
        full_env = dict(os.environ)
        full_env.pop("STEPGRAPH_NO_PANDAS", None)
        full_env.pop("AZUREML_BI_OUTPUT_PATH", None)
        full_env.update(env or {})
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, HARNESS],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=full_env,
        )
        self._lines = queue.Queue()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()

    def _read_stdout(self):
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)  # EOF

    def send(self, message):
        self.send_raw((json.dumps(message) + "\n").encode("utf-8"))

    def send_raw(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def recv_line(self, timeout=TIMEOUT):
        """Next raw stdout line (bytes), or None at EOF."""
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no reply from worker within %ss; stderr:\n%s" % (timeout, self.stderr()))

    def recv(self, timeout=TIMEOUT):
        line = self.recv_line(timeout)
        if line is None:
            raise AssertionError("worker closed stdout; stderr:\n%s" % self.stderr())
        try:
            return json.loads(line.decode("utf-8"))
        except ValueError:
            raise AssertionError("stdout line is not protocol JSON: %r" % line)

    def request(self, message):
        self.send(message)
        return self.recv()

    def close_stdin(self):
        self.proc.stdin.close()

    def wait(self, timeout=TIMEOUT):
        return self.proc.wait(timeout=timeout)

    def stderr(self):
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except (OSError, ValueError):
                pass
        self._stderr.close()


class WorkerTestCase(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self._tmp.cleanup)
        self.tmp = os.path.realpath(self._tmp.name)
        self.scripts = os.path.join(self.tmp, "scripts")
        self.work = os.path.join(self.tmp, "work")
        self.out = os.path.join(self.tmp, "out")
        self.logs = os.path.join(self.tmp, "logs", "user")
        for folder in (self.scripts, self.work, self.out):
            os.makedirs(folder)

    def write(self, relpath, content, mode="w"):
        path = os.path.join(self.tmp, relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, mode) as f:
            f.write(content)
        return path

    def user_log(self, kind, suffix, agent="worker-0"):
        """A file of Azure's logs/user layout (node 0; a harness started without the
        engine's STEPGRAPH_PROCESS_NAME names the process after its agent); "" if absent."""
        path = os.path.join(self.logs, kind, "0", agent + suffix)
        if not os.path.exists(path):
            return ""
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def script(self, source, name="score.py"):
        return self.write(os.path.join("scripts", name), textwrap.dedent(source))

    def init_message(self, entry, **overrides):
        message = {
            "type": "init",
            "protocol": 1,
            "entry_script": entry,
            "source_directory": self.scripts,
            "arguments": [],
            "output_dir": self.out,
            "working_dir": self.work,
            "log_dir": self.logs,
            "agent_name": "worker-0",
            "side_inputs": {},
            "append_row_format": "text",
            "collect_rows": True,
        }
        message.update(overrides)
        return message

    def spawn(self, env=None):
        worker = WorkerProcess(env)
        self.addCleanup(worker.close)
        return worker

    def start(self, source, env=None, **init_overrides):
        """Worker with `source` as entry script, after a successful init."""
        worker = self.spawn(env)
        reply = worker.request(self.init_message(self.script(source), **init_overrides))
        self.assertEqual(reply.get("type"), "ready", "%r\nstderr:\n%s" % (reply, worker.stderr()))
        self.assertEqual(reply["pid"], worker.proc.pid)
        return worker

    def run_files(self, worker, index, files):
        return worker.request({"type": "run", "index": index, "kind": "files", "files": files})

    def assertResult(self, reply, index, rows):
        self.assertEqual(reply.get("type"), "result", reply)
        self.assertEqual(reply["index"], index)
        self.assertEqual(reply["count"], len(rows))
        self.assertEqual(reply["rows"], rows)


ECHO_SCRIPT = """
import os

def run(mini_batch):
    return [os.path.basename(p) for p in mini_batch]
"""


class FilesTests(WorkerTestCase):
    def test_files_mini_batch_rows_in_order(self):
        worker = self.start(ECHO_SCRIPT)
        files = [os.path.join(self.tmp, n) for n in ("c.txt", "a.txt", "b.txt")]
        self.assertResult(self.run_files(worker, 7, files), 7, ["c.txt", "a.txt", "b.txt"])
        self.assertResult(self.run_files(worker, 8, files[:1]), 8, ["c.txt"])
        self.assertResult(self.run_files(worker, 9, []), 9, [])

    def test_prints_do_not_corrupt_protocol(self):
        worker = self.start(
            """
            import os, subprocess, sys
            print("print at import")
            def init():
                print("print in init")
                os.write(1, b"os.write in init\\n")
            def run(mini_batch):
                print("print in run", mini_batch)
                sys.stdout.write("sys.stdout.write in run\\n")
                sys.__stdout__.write("sys.__stdout__ in run\\n")
                sys.__stdout__.flush()
                os.write(1, b"os.write in run\\n")
                subprocess.run([sys.executable, "-c", "print('child process output')"], check=True)
                return ["row-" + os.path.basename(p) for p in mini_batch]
            """
        )
        reply = self.run_files(worker, 1, ["/x/one", "/x/two"])
        self.assertResult(reply, 1, ["row-one", "row-two"])
        self.assertEqual(worker.request({"type": "shutdown"}), {"type": "bye"})
        self.assertIsNone(worker.recv_line(), "nothing may follow bye on stdout")
        self.assertEqual(worker.wait(), 0)
        # Prints go where Azure keeps them (logs/user/stdout/<node>/<process>.stdout.txt),
        # never into the protocol.
        err = self.user_log("stdout", ".stdout.txt")
        for text in (
            "print at import",
            "print in init",
            "os.write in init",
            "print in run",
            "sys.stdout.write in run",
            "sys.__stdout__ in run",
            "os.write in run",
            "child process output",
        ):
            self.assertIn(text, err)

    def test_context_dataset_of_a_files_mini_batch(self):
        worker = self.start(
            """
            def run(mini_batch, mini_batch_context):
                dataset = mini_batch_context.dataset
                assert dataset.to_path() == mini_batch and len(dataset) == len(mini_batch)
                return [repr(dataset), repr(mini_batch_context.partition_key_value)] + [
                    "%s=%s" % (p, v.get("user")) for p, v in zip(dataset, dataset.partition_values())
                ]
            """
        )
        reply = worker.request({
            "type": "run", "index": 2, "kind": "files", "files": ["/d/ana/a.wav", "/d/bob/b.wav"],
            "partition_key_value": {"user": "ana"},
            "partitions": [{"user": "ana"}, {"user": "bob"}],
        })
        self.assertResult(reply, 2, [
            "FileDataset(mini-batch 2: 2 files ['a.wav', 'b.wav'])",
            "{'user': 'ana'}",
            "/d/ana/a.wav=ana",
            "/d/bob/b.wav=bob",
        ])
        # Without partitions or keys: empty values, an empty key.
        reply = worker.request({"type": "run", "index": 3, "kind": "files", "files": ["/d/c.wav"]})
        self.assertResult(reply, 3, [
            "FileDataset(mini-batch 3: 1 file ['c.wav'])", "{}", "/d/c.wav=None",
        ])

    def test_user_code_reading_stdin_gets_eof(self):
        worker = self.start(
            """
            import sys
            seen = None
            def init():
                global seen
                seen = sys.stdin.read()   # must not block nor eat protocol lines
            def run(mini_batch):
                return [repr(seen)] + mini_batch
            """
        )
        self.assertResult(self.run_files(worker, 1, ["/f"]), 1, ["''", "/f"])
        self.assertResult(self.run_files(worker, 2, ["/g"]), 2, ["''", "/g"])

    def test_generator_and_none_results(self):
        worker = self.start(
            """
            def run(mini_batch):
                if mini_batch == ["none"]:
                    return None
                if mini_batch == ["tuple"]:
                    return ("a", 1)
                return (p.upper() for p in mini_batch)
            """
        )
        self.assertResult(self.run_files(worker, 1, ["x", "y"]), 1, ["X", "Y"])
        self.assertResult(self.run_files(worker, 2, ["none"]), 2, [])
        self.assertResult(self.run_files(worker, 3, ["tuple"]), 3, ["a", "1"])

    def test_collect_rows_false_only_count(self):
        worker = self.start(ECHO_SCRIPT, collect_rows=False)
        reply = self.run_files(worker, 4, ["/a", "/b", "/c"])
        self.assertEqual(reply, {"type": "result", "index": 4, "count": 3})


class InitFailureTests(WorkerTestCase):
    def assertInitFailed(self, source, *expected, **init_overrides):
        worker = self.spawn()
        entry = self.script(source) if source is not None else os.path.join(self.scripts, "missing.py")
        reply = worker.request(self.init_message(entry, **init_overrides))
        self.assertEqual(reply["type"], "init_failed", reply)
        for text in expected:
            self.assertIn(text, reply["error"])
        self.assertIsNone(worker.recv_line(), "nothing may follow init_failed")
        self.assertEqual(worker.wait(), 3)
        return reply, worker

    def test_exception_in_init(self):
        reply, worker = self.assertInitFailed(
            """
            def init():
                raise ValueError("boom in init")
            def run(mini_batch):
                return mini_batch
            """,
            "Traceback (most recent call last)",
            "ValueError: boom in init",
            "score.py",
        )
        self.assertIn("boom in init", worker.stderr())

    def test_exception_at_import(self):
        self.assertInitFailed(
            "import no_such_module_for_stepgraph_tests\ndef run(mb):\n    return mb\n",
            "Traceback",
            "ModuleNotFoundError",
            "no_such_module_for_stepgraph_tests",
        )

    def test_syntax_error(self):
        self.assertInitFailed(
            "def init(:\n    pass\n",
            "SyntaxError",
            "score.py",
        )

    def test_script_without_run(self):
        self.assertInitFailed("def init():\n    pass\n", "defines no run(mini_batch) function")

    def test_missing_entry_script(self):
        self.assertInitFailed(None, "entry script not found", "missing.py")

    def test_argparse_error_in_init(self):
        reply, worker = self.assertInitFailed(
            """
            import argparse
            def init():
                parser = argparse.ArgumentParser()
                parser.add_argument("--required_arg", required=True)
                parser.parse_args()
            def run(mini_batch):
                return mini_batch
            """,
            "sys.exit(2)",
        )
        self.assertIn("--required_arg", worker.stderr())


class RunErrorTests(WorkerTestCase):
    def test_run_error_then_next_run_works(self):
        worker = self.start(
            """
            import sys
            def run(mini_batch):
                if "bad" in mini_batch:
                    raise RuntimeError("cannot score %s" % mini_batch)
                if "exit" in mini_batch:
                    sys.exit(5)
                return ["ok:" + p for p in mini_batch]
            """
        )
        reply = self.run_files(worker, 3, ["good", "bad"])
        self.assertEqual(reply["type"], "error", reply)
        self.assertEqual(reply["index"], 3)
        self.assertIn("Traceback (most recent call last)", reply["error"])
        self.assertIn("RuntimeError: cannot score ['good', 'bad']", reply["error"])
        self.assertIn("RuntimeError: cannot score", worker.stderr())

        reply = self.run_files(worker, 4, ["exit"])
        self.assertEqual(reply["type"], "error", reply)
        self.assertIn("sys.exit(5)", reply["error"])

        self.assertResult(self.run_files(worker, 5, ["good"]), 5, ["ok:good"])

    def test_bad_return_values_are_errors(self):
        worker = self.start(
            """
            def run(mini_batch):
                kind = mini_batch[0]
                if kind == "str":
                    return "not a list"
                if kind == "int":
                    return 42
                if kind == "object":
                    return [object()]
                if kind == "surrogate":
                    return ["\\udcff"]
                return ["fine"]
            """,
            append_row_format="jsonl",
        )
        for index, kind, text in (
            (1, "str", "got str"),
            (2, "int", "got int"),
            (3, "object", "not JSON serializable"),
            (4, "surrogate", "surrogate"),
        ):
            reply = self.run_files(worker, index, [kind])
            self.assertEqual(reply["type"], "error", reply)
            self.assertEqual(reply["index"], index)
            self.assertIn(text, reply["error"])
        self.assertResult(self.run_files(worker, 5, ["ok"]), 5, ['"fine"'])


class ArgumentsAndEntryScriptTests(WorkerTestCase):
    def test_argparse_in_init_sees_arguments(self):
        worker = self.start(
            """
            import argparse, sys
            args = None
            def init():
                global args
                parser = argparse.ArgumentParser()
                parser.add_argument("--threshold", type=float)
                parser.add_argument("--model_name")
                args, _ = parser.parse_known_args()
            def run(mini_batch):
                return [args.threshold, args.model_name, sys.argv[0]]
            """,
            arguments=["--threshold", "0.5", "--model_name", "my model"],
        )
        entry = os.path.join(self.scripts, "score.py")
        self.assertResult(self.run_files(worker, 1, []), 1, ["0.5", "my model", entry])

    def test_source_directory_modules_import(self):
        self.write("scripts/helpers/__init__.py", "")
        self.write("scripts/helpers/util.py", "def shout(s):\n    return s.upper() + '!'\n")
        worker = self.start(
            """
            from helpers.util import shout
            def run(mini_batch):
                return [shout(p) for p in mini_batch]
            """
        )
        self.assertResult(self.run_files(worker, 1, ["hi"]), 1, ["HI!"])

    def test_entry_script_singleton(self):
        labels = self.write("labels.txt", "cat\ndog\n")
        worker = self.start(
            """
            import json, os
            from azureml_user.parallel_run import EntryScript
            from entry_script import EntryScript as LegacyEntryScript

            entry_script = EntryScript()          # at import time, like Azure scripts
            entry_script.logger.info("logger works at import")

            def init():
                EntryScript().logger.warning("warning from init")

            def run(mini_batch):
                es = EntryScript()
                return [
                    es is entry_script and LegacyEntryScript() is entry_script,
                    es.output_dir,
                    es.working_dir,
                    es.log_dir,
                    es.agent_name,
                    os.getcwd(),
                    os.environ["AZUREML_BI_OUTPUT_PATH"],
                    json.dumps(es.config["side_inputs"]),
                    es.config["entry_script"],
                    es.logger.name,
                ]
            """,
            agent_name="worker-7",
            side_inputs={"labels": labels},
        )
        reply = self.run_files(worker, 1, [])
        self.assertResult(
            reply,
            1,
            [
                "True",
                self.out,
                self.work,
                self.logs,
                "worker-7",
                self.work,
                self.out,
                json.dumps({"labels": labels}),
                os.path.join(self.scripts, "score.py"),
                "worker-7",
            ],
        )
        # One place, as Azure's logs/user/entry_script_log/<node>/<process>.log.txt: not
        # also on stderr (which would show each line twice in `stepgraph logs`).
        err = worker.stderr()
        self.assertNotIn("logger works at import", err)
        log_file = self.user_log("entry_script_log", ".log.txt", agent="worker-7")
        self.assertRegex(log_file, r"\|INFO\|worker-7\|logger works at import")
        self.assertRegex(log_file, r"\|WARNING\|worker-7\|warning from init")
        self.assertEqual(log_file.count("logger works at import"), 1, log_file)

    def test_summary_only_script_writes_into_output_dir(self):
        worker = self.start(
            """
            import os
            from azureml_user.parallel_run import EntryScript

            def run(mini_batch):
                out = EntryScript().output_dir
                for path in mini_batch:
                    name = os.path.basename(path)
                    with open(os.path.join(out, name + ".out"), "w") as f:
                        f.write("processed " + name)
                return []
            """,
        )
        self.assertResult(self.run_files(worker, 1, ["/in/a.bin", "/in/b.bin"]), 1, [])
        self.assertEqual(sorted(os.listdir(self.out)), ["a.bin.out", "b.bin.out"])
        with open(os.path.join(self.out, "b.bin.out")) as f:
            self.assertEqual(f.read(), "processed b.bin")


class ShutdownTests(WorkerTestCase):
    SCRIPT = """
        import os
        def run(mini_batch):
            return mini_batch
        def shutdown():
            with open(os.path.join(%r, "shutdown-called"), "w") as f:
                f.write("yes")
            print("shutdown printed")
            %s
    """

    def marker(self):
        return os.path.join(self.tmp, "shutdown-called")

    def test_shutdown_message(self):
        worker = self.start(self.SCRIPT % (self.tmp, "pass"))
        self.assertResult(self.run_files(worker, 1, ["a"]), 1, ["a"])
        self.assertEqual(worker.request({"type": "shutdown"}), {"type": "bye"})
        self.assertEqual(worker.wait(), 0)
        self.assertTrue(os.path.exists(self.marker()))
        self.assertIn("shutdown printed", self.user_log("stdout", ".stdout.txt"))

    def test_failing_shutdown_is_not_fatal(self):
        worker = self.start(self.SCRIPT % (self.tmp, "raise OSError('flush failed')"))
        self.assertEqual(worker.request({"type": "shutdown"}), {"type": "bye"})
        self.assertEqual(worker.wait(), 0)
        self.assertIn("OSError: flush failed", worker.stderr())

    def test_stdin_eof_exits_cleanly(self):
        worker = self.start(self.SCRIPT % (self.tmp, "pass"))
        worker.close_stdin()
        self.assertEqual(worker.wait(), 0)
        self.assertIsNone(worker.recv_line(), "no message after EOF")
        self.assertTrue(os.path.exists(self.marker()))

    def test_eof_before_init(self):
        worker = self.spawn()
        worker.close_stdin()
        self.assertEqual(worker.wait(), 0)
        self.assertIsNone(worker.recv_line())


class ProtocolErrorTests(WorkerTestCase):
    def assertProtocolError(self, worker, raw, text):
        worker.send_raw(raw)
        reply = worker.recv()
        self.assertEqual(reply["type"], "protocol_error", reply)
        self.assertIn(text, reply["error"])
        self.assertEqual(worker.wait(), 4)

    def test_unparseable_line(self):
        worker = self.start(ECHO_SCRIPT)
        self.assertProtocolError(worker, b"{not json\n", "unparseable")

    def test_unknown_type(self):
        worker = self.start(ECHO_SCRIPT)
        self.assertProtocolError(worker, b'{"type":"dance"}\n', "dance")

    def test_run_before_init(self):
        worker = self.spawn()
        self.assertProtocolError(worker, b'{"type":"run","index":1,"kind":"files","files":[]}\n', "before init")


# --------------------------------------------------------------------------
# Tabular mini-batches

CSV_LINES = [
    b"id,name,score\n",
    b"1,alice,0.5\n",
    b'2,"Smith, John",1.5\n',
    b"3,carol,2.5\n",
    b'4,"say ""hi""",3.5\n',
    b"5,eve,4.5",  # no trailing newline on the last line
]

JSONL_LINES = [
    b'{"id": 1, "name": "alice", "tags": ["a"]}\n',
    b"\n",
    b'{"id": 2, "name": "Smith, John", "tags": []}\n',
    b'{"id": 3, "name": "carol", "tags": ["c", "d"]}\n',
]


def line_ranges(lines, wanted):
    """Byte [start, end) of each wanted line index."""
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    return [[offsets[i], offsets[i + 1]] for i in wanted]


def span(lines, first, stop):
    """Byte [start, end) of lines[first:stop] as one range."""
    start = sum(len(line) for line in lines[:first])
    return [start, start + sum(len(line) for line in lines[first:stop])]


TABULAR_SCRIPT = """
import json

def run(mini_batch):
    if isinstance(mini_batch, list):
        kind, records, columns = "list", mini_batch, None
    else:
        kind = type(mini_batch).__name__
        columns = [str(c) for c in mini_batch.columns]
        records = json.loads(mini_batch.to_json(orient="records"))
    return [json.dumps({"kind": kind, "records": records, "columns": columns, "len": len(mini_batch)})]
"""


class TabularTests(WorkerTestCase):
    def setUp(self):
        super().setUp()
        self.csv_path = self.write("data/x.csv", b"".join(CSV_LINES), "wb")
        self.jsonl_path = self.write("data/x.jsonl", b"".join(JSONL_LINES), "wb")

    def csv_segment(self, wanted):
        return {
            "path": self.csv_path,
            "format": "csv",
            "header_end": len(CSV_LINES[0]),
            "ranges": line_ranges(CSV_LINES, wanted),
        }

    def jsonl_segment(self, wanted):
        return {"path": self.jsonl_path, "format": "jsonl", "header_end": 0, "ranges": line_ranges(JSONL_LINES, wanted)}

    def run_tabular(self, worker, index, segments, **extra):
        message = {"type": "run", "index": index, "kind": "tabular", "segments": segments}
        message.update(extra)
        reply = worker.request(message)
        self.assertEqual(reply.get("type"), "result", "%r\nstderr:\n%s" % (reply, worker.stderr()))
        self.assertEqual(reply["count"], 1)
        return json.loads(reply["rows"][0])

    @unittest.skipUnless(HAVE_PANDAS, "pandas not installed")
    def test_partition_values_are_columns_after_the_files_own(self):
        worker = self.start(
            """
            import json

            def run(mini_batch, mini_batch_context):
                dataset = mini_batch_context.dataset
                frame = dataset.to_pandas_dataframe()
                frame["id"] = 0  # a copy: the mini-batch is unchanged
                return [json.dumps({
                    "columns": [str(c) for c in mini_batch.columns],
                    "region": list(mini_batch["region"]),
                    "ids": [int(i) for i in mini_batch["id"]],
                    "repr": repr(dataset),
                    "context": repr(mini_batch_context).split("(")[0],
                    "index": mini_batch_context.minibatch_index,
                })]
            """
        )
        got = self.run_tabular(
            worker,
            4,
            [self.csv_segment([1, 2]), self.csv_segment([3])],
            partition_key_value=None,
            partitions=[{"region": "eu", "year": "2023"}, {"region": "us", "year": "2024"}],
        )
        self.assertEqual(got["columns"], ["id", "name", "score", "region", "year"])
        self.assertEqual(got["region"], ["eu", "eu", "us"])
        self.assertEqual(got["ids"], [1, 2, 3])
        self.assertEqual(
            got["repr"],
            "TabularDataset(mini-batch 4: 3 rows, columns ['id', 'name', 'score', 'region', 'year'])",
        )
        self.assertEqual((got["context"], got["index"]), ("MiniBatchContext", 4))

    def test_csv_ranges_as_list_of_dicts(self):
        worker = self.start(TABULAR_SCRIPT, env=NO_PANDAS)
        # Lines 1-2 as one range, then 5 and 4 (skipping 3), plus line 2 again
        # in a second segment to check concatenation over segments.  Line 5
        # has no trailing newline and must not swallow line 4.
        segments = [
            {
                "path": self.csv_path,
                "format": "csv",
                "header_end": len(CSV_LINES[0]),
                "ranges": [span(CSV_LINES, 1, 3)] + line_ranges(CSV_LINES, [5, 4]),
            },
            self.csv_segment([2]),
        ]
        got = self.run_tabular(worker, 1, segments)
        self.assertEqual(got["kind"], "list")
        self.assertEqual(
            got["records"],
            [
                {"id": "1", "name": "alice", "score": "0.5"},
                {"id": "2", "name": "Smith, John", "score": "1.5"},
                {"id": "5", "name": "eve", "score": "4.5"},
                {"id": "4", "name": 'say "hi"', "score": "3.5"},
                {"id": "2", "name": "Smith, John", "score": "1.5"},
            ],
        )

    @unittest.skipUnless(HAVE_PANDAS, "pandas not installed")
    def test_csv_ranges_as_dataframe(self):
        worker = self.start(TABULAR_SCRIPT)
        got = self.run_tabular(worker, 1, [self.csv_segment([1, 2, 5]), self.csv_segment([3])])
        self.assertEqual(got["kind"], "DataFrame")
        self.assertEqual(got["columns"], ["id", "name", "score"])
        self.assertEqual(
            got["records"],
            [
                {"id": 1, "name": "alice", "score": 0.5},
                {"id": 2, "name": "Smith, John", "score": 1.5},
                {"id": 5, "name": "eve", "score": 4.5},
                {"id": 3, "name": "carol", "score": 2.5},
            ],
        )

    def test_tabular_format_dataframe_without_pandas_fails_init_with_the_fix(self):
        worker = self.spawn(NO_PANDAS)
        reply = worker.request(
            self.init_message(self.script(TABULAR_SCRIPT), tabular_format="dataframe")
        )
        self.assertEqual(reply.get("type"), "init_failed", reply)
        self.assertIn(
            "tabular inputs need pandas in the step's environment: add pandas to "
            "environment.requirements",
            reply["error"],
        )

    def test_tabular_format_records_gives_dicts_even_with_pandas(self):
        worker = self.start(TABULAR_SCRIPT, tabular_format="records")
        got = self.run_tabular(worker, 2, [self.jsonl_segment([0, 1])])
        self.assertEqual(got["kind"], "list")

    def test_an_unknown_tabular_format_fails_init(self):
        worker = self.spawn()
        reply = worker.request(
            self.init_message(self.script(TABULAR_SCRIPT), tabular_format="arrow")
        )
        self.assertEqual(reply.get("type"), "init_failed", reply)
        self.assertIn("unsupported tabular_format", reply["error"])

    def test_jsonl_as_list_of_dicts(self):
        worker = self.start(TABULAR_SCRIPT, env=NO_PANDAS)
        got = self.run_tabular(worker, 2, [self.jsonl_segment([0, 1, 3])])
        self.assertEqual(got["kind"], "list")
        self.assertEqual(
            got["records"],
            [{"id": 1, "name": "alice", "tags": ["a"]}, {"id": 3, "name": "carol", "tags": ["c", "d"]}],
        )

    @unittest.skipUnless(HAVE_PANDAS, "pandas not installed")
    def test_jsonl_as_dataframe(self):
        worker = self.start(TABULAR_SCRIPT)
        got = self.run_tabular(worker, 2, [self.jsonl_segment([0, 1, 2, 3])])
        self.assertEqual(got["kind"], "DataFrame")
        self.assertEqual(got["columns"], ["id", "name", "tags"])
        self.assertEqual([r["name"] for r in got["records"]], ["alice", "Smith, John", "carol"])
        self.assertEqual(got["len"], 3)

    def test_empty_segments_no_pandas(self):
        worker = self.start(TABULAR_SCRIPT, env=NO_PANDAS)
        got = self.run_tabular(worker, 3, [])
        self.assertEqual((got["kind"], got["records"]), ("list", []))

    @unittest.skipUnless(HAVE_PANDAS, "pandas not installed")
    def test_empty_segments_dataframe(self):
        worker = self.start(TABULAR_SCRIPT)
        got = self.run_tabular(worker, 3, [])
        self.assertEqual((got["kind"], got["len"]), ("DataFrame", 0))

    def test_partition_key_value_with_two_argument_run(self):
        worker = self.start(
            """
            import json
            def run(mini_batch, mini_batch_context):
                return [json.dumps(mini_batch_context.partition_key_value),
                        mini_batch_context.minibatch_index,
                        len(mini_batch)]
            """,
            env=NO_PANDAS,
        )
        segment = self.csv_segment([1, 2])
        message = {"type": "run", "index": 11, "kind": "tabular", "segments": [segment]}
        reply = worker.request(dict(message, partition_key_value={"region": "eu"}))
        self.assertResult(reply, 11, ['{"region": "eu"}', "11", "2"])
        reply = worker.request(dict(message, index=12))  # absent
        self.assertResult(reply, 12, ["{}", "12", "2"])
        reply = worker.request(dict(message, index=13, partition_key_value=None))
        self.assertResult(reply, 13, ["{}", "13", "2"])

    def test_bad_segment_is_a_mini_batch_error(self):
        worker = self.start(TABULAR_SCRIPT, env=NO_PANDAS)
        reply = worker.request(
            {"type": "run", "index": 1, "kind": "tabular",
             "segments": [{"path": os.path.join(self.tmp, "nope.csv"), "format": "csv", "header_end": 3, "ranges": []}]}
        )
        self.assertEqual(reply["type"], "error")
        self.assertIn("nope.csv", reply["error"])
        self.assertEqual(self.run_tabular(worker, 2, [])["kind"], "list")


# --------------------------------------------------------------------------
# append_row_format

LIST_RESULT_SCRIPT = """
def run(mini_batch):
    kind = mini_batch[0]
    if kind == "mixed":
        return ["plain", 3, 2.5, None, True, [1, "a,b"], ("t", 2), {"k": "v", "n": 1}]
    if kind == "dicts":
        return [{"id": 1, "name": "x, y"}, {"id": 2, "extra": "e"}]
    if kind == "nan":
        return [float("nan"), {"v": float("nan")}]
"""

DATAFRAME_SCRIPT = """
import pandas as pd

def run(mini_batch):
    return pd.DataFrame({
        "id": [1, 2],
        "score": [2.5, float("nan")],
        "name": ["x, y", "z"],
        "flag": [True, False],
    })
"""


class RowFormatTests(WorkerTestCase):
    def test_text_format_lists(self):
        worker = self.start(LIST_RESULT_SCRIPT, append_row_format="text")
        self.assertResult(
            self.run_files(worker, 1, ["mixed"]),
            1,
            ["plain", "3", "2.5", "None", "True", "[1, 'a,b']", "('t', 2)", "{'k': 'v', 'n': 1}"],
        )

    def test_csv_format_lists(self):
        worker = self.start(LIST_RESULT_SCRIPT, append_row_format="csv")
        reply = self.run_files(worker, 1, ["mixed"])
        self.assertResult(reply, 1, ["plain", "3", "2.5", "None", "True", '1,"a,b"', "t,2", "v,1"])
        self.assertNotIn("columns", reply)

        reply = self.run_files(worker, 2, ["dicts"])
        self.assertResult(reply, 2, ['1,"x, y",', "2,,e"])
        self.assertEqual(reply["columns"], ["id", "name", "extra"])

    def test_jsonl_format_lists(self):
        worker = self.start(LIST_RESULT_SCRIPT, append_row_format="jsonl")
        reply = self.run_files(worker, 1, ["mixed"])
        self.assertResult(
            reply,
            1,
            ['"plain"', "3", "2.5", "null", "true", '[1, "a,b"]', '["t", 2]', '{"k": "v", "n": 1}'],
        )
        for row in reply["rows"]:
            json.loads(row)
        self.assertResult(self.run_files(worker, 2, ["nan"]), 2, ["null", '{"v": null}'])

    @unittest.skipUnless(HAVE_PANDAS, "pandas not installed")
    def test_dataframe_text_format(self):
        worker = self.start(DATAFRAME_SCRIPT, append_row_format="text")
        self.assertResult(self.run_files(worker, 1, []), 1, ["1 2.5 x, y True", "2 nan z False"])

    @unittest.skipUnless(HAVE_PANDAS, "pandas not installed")
    def test_dataframe_csv_format(self):
        worker = self.start(DATAFRAME_SCRIPT, append_row_format="csv")
        reply = self.run_files(worker, 1, [])
        self.assertResult(reply, 1, ['1,2.5,"x, y",True', "2,,z,False"])
        self.assertEqual(reply["columns"], ["id", "score", "name", "flag"])

    @unittest.skipUnless(HAVE_PANDAS, "pandas not installed")
    def test_dataframe_jsonl_format(self):
        # STEPGRAPH_NO_PANDAS only affects how inputs are built: a DataFrame
        # returned by a script that imports pandas itself is still recognised.
        worker = self.start(DATAFRAME_SCRIPT, env=NO_PANDAS, append_row_format="jsonl")
        reply = self.run_files(worker, 1, [])
        self.assertEqual(reply["count"], 2)
        self.assertEqual(
            [json.loads(r) for r in reply["rows"]],
            [
                {"id": 1, "score": 2.5, "name": "x, y", "flag": True},
                {"id": 2, "score": None, "name": "z", "flag": False},
            ],
        )

    def test_unknown_row_format_is_init_failure(self):
        worker = self.spawn()
        reply = worker.request(self.init_message(self.script(ECHO_SCRIPT), append_row_format="xml"))
        self.assertEqual(reply["type"], "init_failed")
        self.assertIn("append_row_format", reply["error"])
        self.assertEqual(worker.wait(), 3)


class LimitsAndPathsTests(WorkerTestCase):
    """Protocol line limit, bounded error texts, and non-UTF-8 paths."""

    def test_csv_field_of_one_mebibyte_is_read(self):
        big = "x" * (1 << 20)
        data = ("id,text\n1,%s\n" % big).encode("utf-8")
        path = self.write("data/big.csv", data, "wb")
        worker = self.start(
            """
            def run(mini_batch):
                return [len(r["text"]) for r in mini_batch]
            """,
            env=NO_PANDAS,
        )
        segment = {"path": path, "format": "csv", "header_end": len(b"id,text\n"), "ranges": [[len(b"id,text\n"), len(data)]]}
        reply = worker.request({"type": "run", "index": 0, "kind": "tabular", "segments": [segment]})
        self.assertResult(reply, 0, [str(1 << 20)])

    def test_non_utf8_paths_arrive_as_openable_names(self):
        folder = os.fsencode(self.tmp)
        names = [folder + b"/a\xff.txt", folder + b"/a\xfe.txt"]
        for i, name in enumerate(names):
            with open(name, "wb") as f:
                f.write(b"content %d" % i)
        worker = self.start(
            """
            def run(mini_batch):
                return [open(p).read() for p in mini_batch]
            """
        )
        files = [{"b64": base64.b64encode(n).decode("ascii")} for n in names]
        self.assertResult(self.run_files(worker, 0, files), 0, ["content 0", "content 1"])

    def test_huge_error_text_is_sent_as_an_excerpt(self):
        worker = self.start(
            """
            def run(mini_batch):
                raise ValueError("A" * 100000 + "END")
            """
        )
        reply = self.run_files(worker, 3, [])
        self.assertEqual(reply["type"], "error")
        self.assertLess(len(reply["error"]), 9000)
        self.assertIn("bytes omitted", reply["error"])
        self.assertTrue(reply["error"].rstrip().endswith("END"), reply["error"][-100:])

    def test_result_over_the_line_limit_is_an_error_reply(self):
        worker = self.start(
            """
            def run(mini_batch):
                return ["y" * 5000]
            """,
            max_line_bytes=1000,
        )
        reply = self.run_files(worker, 4, [])
        self.assertEqual(reply["type"], "error")
        self.assertIn("over the protocol's line limit of 1000 bytes", reply["error"])


if __name__ == "__main__":
    unittest.main()
