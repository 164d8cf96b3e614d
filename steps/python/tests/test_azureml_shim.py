"""Tests of the ``azureml`` shim shipped with the harness (steps/python/azureml).

The shim's behaviour depends on the process (``sys.meta_path``, environment
variables, a per-process run), so every check runs in a fresh interpreter:
either a snippet (``python -c``) with the harness folder on PYTHONPATH, or a
worker started by the harness (``test_worker.WorkerProcess``).
"""
import json
import os
import pickle
import subprocess
import sys
import tempfile
import textwrap
import threading
import unittest

from test_worker import TIMEOUT, WorkerTestCase

HERE = os.path.dirname(os.path.abspath(__file__))
HARNESS_DIR = os.path.dirname(HERE)

SHIM_VARS = (
    "STEPGRAPH_STEP_NAME",
    "STEPGRAPH_MODELS",
    "AZUREML_MODEL_DIR",
    "STEPGRAPH_METRICS_FILE",
    "STEPGRAPH_INPUT_DATASETS",
)


def run_snippet(source, env=None, cwd=None):
    """Run ``source`` in a fresh interpreter that sees the shim; (returncode, stdout, stderr)."""
    full_env = dict(os.environ)
    for var in SHIM_VARS:
        full_env.pop(var, None)
    full_env["PYTHONPATH"] = HARNESS_DIR
    full_env["PYTHONDONTWRITEBYTECODE"] = "1"
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        env=full_env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=TIMEOUT,
    )
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


class SnippetTestCase(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self._tmp.cleanup)
        self.tmp = os.path.realpath(self._tmp.name)

    def ok(self, source, env=None):
        """Run a snippet that must succeed; its stdout lines."""
        code, out, err = run_snippet(source, env, cwd=self.tmp)
        self.assertEqual(code, 0, "snippet failed:\n%s" % err)
        return out.splitlines()

    def fails(self, source, exception, *texts, env=None):
        """Run a snippet that must die of ``exception``; its stderr."""
        code, out, err = run_snippet(source, env, cwd=self.tmp)
        self.assertNotEqual(code, 0, "snippet succeeded:\n%s" % out)
        last = err.strip().splitlines()[-1]
        self.assertTrue(last.startswith(exception + ": "), err)
        for text in texts:
            self.assertIn(text, last)
        return last


class ImportTests(SnippetTestCase):
    def test_both_import_paths_give_the_same_classes(self):
        lines = self.ok(
            """
            from azureml.core import Model, Run
            from azureml.core.model import Model as Model2
            from azureml.core.run import Run as Run2
            import azureml.core
            from azureml import core
            from azureml.exceptions import ModelNotFoundException, WebserviceException
            print(Model is Model2, Run is Run2, core is azureml.core)
            print(callable(Model.get_model_path), callable(Run.get_context))
            """
        )
        self.assertEqual(lines, ["True True True", "True True"])

    def test_unsupported_name_names_the_symbol(self):
        for source, symbol in (
            ("from azureml.core import Workspace", "azureml.core.Workspace"),
            ("from azureml.core import Model, Dataset", "azureml.core.Dataset"),
            ("from azureml.core.model import InferenceConfig", "azureml.core.model.InferenceConfig"),
            ("from azureml.core.run import get_run", "azureml.core.run.get_run"),
            ("import azureml.core\nazureml.core.Experiment", "azureml.core.Experiment"),
            ("from azureml import widgets", "azureml.widgets"),
        ):
            with self.subTest(source=source):
                self.fails(source, "ImportError", symbol + " is not supported locally", "stepgraph")

    def test_unsupported_module_names_the_module(self):
        for source, module in (
            ("import azureml.data", "azureml.data"),
            ("from azureml.data.dataset_factory import TabularDatasetFactory", "azureml.data"),
            ("from azureml.pipeline.steps import ParallelRunStep", "azureml.pipeline"),
            ("import azureml.core.workspace", "azureml.core.workspace"),
            ("from azureml.core.environment import Environment", "azureml.core.environment"),
        ):
            with self.subTest(source=source):
                self.fails(
                    source, "ModuleNotFoundError", module + " is not supported locally", "README"
                )

    def test_the_errors_are_import_errors_scripts_can_catch(self):
        lines = self.ok(
            """
            try:
                from azureml.core import Workspace
            except ImportError:
                print("name caught")
            try:
                import azureml.opendatasets
            except ImportError as exc:
                print("module caught", exc.name)
            import azureml.core, importlib
            print(hasattr(azureml.core, "__wrapped__"), hasattr(azureml.core, "_private"))
            """
        )
        self.assertEqual(lines, ["name caught", "module caught azureml.opendatasets", "False False"])

    def test_unsupported_class_attributes_are_named(self):
        self.fails(
            "from azureml.core import Model\nModel.register(None, 'm.pkl', 'm')",
            "AttributeError",
            "azureml.core.Model.register is not supported locally",
        )
        self.fails(
            "from azureml.core import Run\nRun.get_context().experiment.workspace",
            "AttributeError",
            "azureml.core.Run.experiment is not supported locally",
        )
        self.fails(
            "from azureml.core import Model\nModel(None, 'iris')",
            "azureml.exceptions.UserErrorException",
            "Model(workspace, ...) is not supported locally",
            "Model.get_model_path",
        )

    def test_other_modules_are_not_affected(self):
        lines = self.ok(
            """
            import azureml.core, pickle, json
            try:
                import surely_not_a_module_for_stepgraph
            except ModuleNotFoundError as exc:
                print(type(exc).__name__, "stepgraph" in str(exc) and "supported" in str(exc))
            class Plain(object):
                pass
            print(type(pickle.loads(pickle.dumps(Plain()))).__name__)
            from azureml_user.parallel_run import EntryScript
            print(EntryScript.__name__)
            """
        )
        self.assertEqual(lines, ["ModuleNotFoundError False", "Plain", "EntryScript"])


class ModelTests(SnippetTestCase):
    """Model.get_model_path against the layout stepgraph makes."""

    def setUp(self):
        super(ModelTests, self).setUp()
        self.model_dir = os.path.join(self.tmp, "azureml-models")
        # One-file model: <dir>/iris-prs/1/iris.pkl.  Folder model: <dir>/bert/3/bert-base/...
        self.iris = os.path.join(self.model_dir, "iris-prs", "1", "iris.pkl")
        os.makedirs(os.path.dirname(self.iris))
        with open(self.iris, "wb") as f:
            pickle.dump({"threshold": 0.5}, f)
        self.bert = os.path.join(self.model_dir, "bert", "3", "bert-base")
        os.makedirs(os.path.join(self.bert, "vocab"))
        for name in ("config.json", "vocab/words.txt"):
            with open(os.path.join(self.bert, name), "w") as f:
                f.write("x")
        self.env = {
            "STEPGRAPH_STEP_NAME": "score-iris",
            "AZUREML_MODEL_DIR": self.model_dir,
            "STEPGRAPH_MODELS": json.dumps({"iris-prs": {"version": 1}, "bert": {"version": 3}}),
        }

    def path_of(self, call, env=None):
        lines = self.ok(
            "from azureml.core.model import Model\nprint(Model.get_model_path(%s))" % call,
            env or self.env,
        )
        return lines[-1]

    def test_one_file_model_gives_the_file_folder_model_the_folder(self):
        self.assertEqual(self.path_of("'iris-prs'"), self.iris)
        self.assertEqual(self.path_of("'iris-prs', version=1"), self.iris)
        self.assertEqual(self.path_of("model_name='iris-prs', version=1, _workspace=None"), self.iris)
        self.assertEqual(self.path_of("'bert'"), self.bert)
        self.assertEqual(self.path_of("'bert', 3"), self.bert)

    def test_declared_path_is_returned_as_given(self):
        env = dict(self.env)
        env["STEPGRAPH_MODELS"] = json.dumps({"iris-prs": {"version": 1, "path": self.iris}})
        env.pop("AZUREML_MODEL_DIR")
        self.assertEqual(self.path_of("'iris-prs'", env), self.iris)

    def test_azure_style_scoring_init_loads_the_pickle(self):
        lines = self.ok(
            """
            import os, pickle
            from azureml.core.model import Model

            def init():
                global model
                model_path = Model.get_model_path("iris-prs")
                with open(model_path, "rb") as f:
                    model = pickle.load(f)
                # The path Azure documents for AZUREML_MODEL_DIR works too.
                same = os.path.join(os.environ["AZUREML_MODEL_DIR"], "iris-prs", "1", "iris.pkl")
                print(model["threshold"], same == model_path)

            init()
            """,
            self.env,
        )
        self.assertEqual(lines, ["0.5 True"])

    def test_undeclared_model_names_the_step_and_the_fix(self):
        # The files are there, but the step did not declare them: never looked up.
        os.makedirs(os.path.join(self.model_dir, "secret", "1"))
        with open(os.path.join(self.model_dir, "secret", "1", "s.pkl"), "w") as f:
            f.write("x")
        last = self.fails(
            "from azureml.core import Model\nModel.get_model_path('secret')",
            "azureml.exceptions.ModelNotFoundException",
            'step "score-iris" does not declare model \'secret\'',
            'add it to `models` of step "score-iris"',
            "bert:3, iris-prs:1",
            env=self.env,
        )
        self.assertNotIn(self.model_dir, last)

    def test_other_version_is_refused(self):
        self.fails(
            "from azureml.core import Model\nModel.get_model_path('iris-prs', version=2)",
            "azureml.exceptions.WebserviceException",
            'step "score-iris" declares version 1 of model \'iris-prs\'',
            '"iris-prs:2"',
            env=self.env,
        )

    def test_version_must_be_an_int(self):
        self.fails(
            "from azureml.core import Model\nModel.get_model_path('iris-prs', version='1')",
            "azureml.exceptions.WebserviceException",
            "version should be an int",
            env=self.env,
        )

    def test_no_models_declared_outside_stepgraph(self):
        self.fails(
            "from azureml.core import Model\nModel.get_model_path('iris-prs')",
            "azureml.exceptions.ModelNotFoundException",
            "does not declare model 'iris-prs' (it declares: none)",
            "STEPGRAPH_STEP_NAME is not set",
            env={"AZUREML_MODEL_DIR": self.model_dir},
        )

    def test_broken_layout_is_reported(self):
        os.makedirs(os.path.join(self.model_dir, "two", "1"))
        for name in ("a", "b"):
            with open(os.path.join(self.model_dir, "two", "1", name), "w") as f:
                f.write(name)
        env = dict(self.env)
        env["STEPGRAPH_MODELS"] = json.dumps({"two": {"version": 1}, "gone": {"version": 2}})
        self.fails(
            "from azureml.core import Model\nModel.get_model_path('two')",
            "azureml.exceptions.WebserviceException",
            "can contain only 1 file or folder",
            env=env,
        )
        self.fails(
            "from azureml.core import Model\nModel.get_model_path('gone')",
            "azureml.exceptions.ModelNotFoundException",
            'the model of step "score-iris" is missing at',
            env=env,
        )

    def test_bad_models_variable_is_named(self):
        env = dict(self.env)
        env["STEPGRAPH_MODELS"] = "[1, 2]"
        self.fails(
            "from azureml.core import Model\nModel.get_model_path('iris-prs')",
            "ValueError",
            "STEPGRAPH_MODELS must be a JSON object",
            env=env,
        )


class RunTests(SnippetTestCase):
    def setUp(self):
        super(RunTests, self).setUp()
        self.metrics = os.path.join(self.tmp, "metrics.jsonl")
        self.env = {"STEPGRAPH_METRICS_FILE": self.metrics}

    def records(self):
        with open(self.metrics, encoding="utf-8") as f:
            records = [json.loads(line) for line in f]
        for record in records:
            self.assertRegex(record.pop("time"), r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        return records

    def test_metrics_are_json_lines(self):
        self.ok(
            """
            from azureml.core import Run
            run = Run.get_context()
            run.log("accuracy", 0.93, description="on the holdout")
            run.log("loss", 0.5, step=2)
            run.log("label", "cat")
            run.log_row("confusion", tp=3, fp=1)
            run.log_list("scores", [0.1, 0.2])
            run.log_table("curve", {"x": [1, 2], "y": [0.5, 0.25]})
            run.tag("model", "iris-prs:1")
            run.set_tags({"a": 1})
            run.tag("flag")
            run.log("nan", float("nan"))
            """,
            self.env,
        )
        self.assertEqual(
            self.records(),
            [
                {"kind": "log", "name": "accuracy", "value": 0.93, "description": "on the holdout"},
                {"kind": "log", "name": "loss", "value": 0.5, "step": 2},
                {"kind": "log", "name": "label", "value": "cat"},
                {"kind": "log_row", "name": "confusion", "value": {"tp": 3, "fp": 1}},
                {"kind": "log_list", "name": "scores", "value": [0.1, 0.2]},
                {"kind": "log_table", "name": "curve", "value": {"x": [1, 2], "y": [0.5, 0.25]}},
                {"kind": "tag", "name": "model", "value": "iris-prs:1"},
                {"kind": "tag", "name": "a", "value": "1"},
                {"kind": "tag", "name": "flag", "value": ""},
                {"kind": "log", "name": "nan", "value": "NaN"},
            ],
        )

    def test_context_is_one_offline_run_per_process(self):
        lines = self.ok(
            """
            from azureml.core import Run
            from azureml.core.run import Run as Run2
            run = Run.get_context()
            run.log("n", 1)
            run.log("n", 2)
            run.log("m", 3)
            print(Run2.get_context() is run, run.id.startswith("OfflineRun_"))
            print(sorted(run.get_metrics().items()), run.get_metrics("m"), run.get_tags())
            """,
            self.env,
        )
        self.assertEqual(lines, ["True True", "[('m', 3), ('n', [1, 2])] {'m': 3} {}"])

    def test_bad_values_are_refused_before_writing(self):
        self.fails(
            "from azureml.core import Run\nRun.get_context().log('obj', object())",
            "TypeError",
            "Run.log('obj'): cannot record a value of type object",
            env=self.env,
        )
        self.assertFalse(os.path.exists(self.metrics))
        self.fails(
            "from azureml.core import Run\nRun.get_context(allow_offline=False)",
            "azureml.exceptions.RunEnvironmentException",
            "not Azure runs",
            env=self.env,
        )

    def test_without_a_metrics_file_lines_go_to_stderr(self):
        code, out, err = run_snippet("from azureml.core import Run\nRun.get_context().log('a', 1)")
        self.assertEqual(code, 0, err)
        self.assertIn('"name":"a","value":1', err)

    def test_input_datasets_from_the_environment(self):
        env = dict(self.env)
        env["STEPGRAPH_INPUT_DATASETS"] = json.dumps({"iris": "/data/iris.csv"})
        lines = self.ok(
            """
            from azureml.core import Run
            inputs = Run.get_context().input_datasets
            inputs["changed"] = "x"
            print(sorted(Run.get_context().input_datasets.items()))
            """,
            env,
        )
        self.assertEqual(lines, ["[('iris', '/data/iris.csv')]"])

    def test_concurrent_writers_never_interleave_lines(self):
        source = """
            from azureml.core import Run
            run = Run.get_context()
            for i in range(300):
                run.log_list("w", [i] * 40)
        """
        results = []
        threads = [
            threading.Thread(target=lambda: results.append(run_snippet(source, self.env)))
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual([r[0] for r in results], [0, 0, 0, 0], results)
        records = self.records()
        self.assertEqual(len(records), 1200)
        self.assertTrue(all(len(set(r["value"])) == 1 for r in records))


MODEL_SCRIPT = """
import os
import pickle

from azureml.core import Model, Run
from azureml_user.parallel_run import EntryScript

def init():
    global model, azure_run
    model_path = Model.get_model_path(model_name="iris-prs")
    with open(model_path, "rb") as f:
        model = pickle.load(f)
    azure_run = Run.get_context()
    EntryScript().logger.info("model loaded from %s" % model_path)

def run(mini_batch):
    azure_run.log("mini_batch_items", len(mini_batch))
    labels = Run.get_context().input_datasets["labels"]
    with open(labels) as f:
        label = f.read().strip()
    return ["%s %s %s" % (os.path.basename(p), label, model["threshold"]) for p in mini_batch]
"""


class WorkerShimTests(WorkerTestCase):
    """The shim as an entry script sees it inside the harness."""

    def model_env(self):
        model_dir = os.path.join(self.tmp, "models")
        path = os.path.join(model_dir, "iris-prs", "1", "iris.pkl")
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as f:
            pickle.dump({"threshold": 0.25}, f)
        self.metrics = os.path.join(self.tmp, "metrics.jsonl")
        return {
            "STEPGRAPH_STEP_NAME": "score",
            "AZUREML_MODEL_DIR": model_dir,
            "STEPGRAPH_MODELS": json.dumps({"iris-prs": {"version": 1, "path": path}}),
            "STEPGRAPH_METRICS_FILE": self.metrics,
        }

    def test_scoring_script_with_model_metrics_and_side_input(self):
        labels = self.write("labels.txt", "flower\n")
        worker = self.start(
            MODEL_SCRIPT,
            env=self.model_env(),
            agent_name="worker-3",
            side_inputs={"labels": labels},
        )
        self.assertResult(
            self.run_files(worker, 1, ["/in/a.csv", "/in/b.csv"]),
            1,
            ["a.csv flower 0.25", "b.csv flower 0.25"],
        )
        self.assertResult(self.run_files(worker, 2, ["/in/c.csv"]), 2, ["c.csv flower 0.25"])
        with open(self.metrics) as f:
            records = [json.loads(line) for line in f]
        self.assertEqual(
            [(r["agent"], r["kind"], r["name"], r["value"]) for r in records],
            [("worker-3", "log", "mini_batch_items", 2), ("worker-3", "log", "mini_batch_items", 1)],
        )
        log_file = self.user_log("entry_script_log", ".log.txt", agent="worker-3")
        self.assertIn("model loaded from", log_file)

    def test_undeclared_model_fails_init_with_the_fix(self):
        env = self.model_env()
        env["STEPGRAPH_MODELS"] = "{}"
        worker = self.spawn(env)
        reply = worker.request(self.init_message(self.script(MODEL_SCRIPT)))
        self.assertEqual(reply["type"], "init_failed", reply)
        self.assertIn("ModelNotFoundException", reply["error"])
        self.assertIn('add it to `models` of step "score"', reply["error"])

    def test_unsupported_import_fails_init_naming_the_symbol(self):
        worker = self.spawn()
        entry = self.script(
            """
            from azureml.core import Model, Workspace

            def run(mini_batch):
                return mini_batch
            """
        )
        reply = worker.request(self.init_message(entry))
        self.assertEqual(reply["type"], "init_failed", reply)
        self.assertIn("ImportError: azureml.core.Workspace is not supported locally", reply["error"])
        self.assertIn("score.py", reply["error"])

    def test_source_directory_cannot_shadow_the_shim(self):
        # A stray azureml/ folder in the user's sources (e.g. a vendored SDK
        # stub) must not replace the shim the harness loaded first.
        self.write("scripts/azureml/__init__.py", "raise RuntimeError('user azureml imported')\n")
        worker = self.start(
            """
            from azureml.core import Model
            def run(mini_batch):
                return [Model.__module__]
            """
        )
        self.assertResult(self.run_files(worker, 1, []), 1, ["azureml.core.model"])


if __name__ == "__main__":
    unittest.main()
