"""stepgraph's ``azureml.core.run``: ``Run.get_context()``, an offline run.

The run records metrics as JSON Lines in the file stepgraph names in
``STEPGRAPH_METRICS_FILE`` (the step's ``metrics.jsonl`` in its run folder,
shown by ``stepgraph runs show``). One line per call, appended with a single
``write`` on a file opened with ``O_APPEND``, so the lines of concurrent
workers never interleave::

    {"time": "2026-01-01T12:00:00.000Z", "agent": "worker-0", "kind": "log",
     "name": "accuracy", "value": 0.93, "description": ""}

``kind`` is the method: ``log`` (with ``"step"`` when given), ``log_row``
(``value`` is an object), ``log_list`` (a list), ``log_table`` (an object of
lists) or ``tag`` (a string). Values are JSON: numpy scalars and arrays become
numbers and lists, dates ISO text, and NaN / infinities the strings ``"NaN"``,
``"Infinity"``, ``"-Infinity"``.

Outside stepgraph (no ``STEPGRAPH_METRICS_FILE``), each line goes to stderr.
"""
import datetime
import json
import math
import os
import sys
import uuid

from azureml import _shim
from azureml.exceptions import RunEnvironmentException, UserErrorException

__all__ = ["Run"]

# Filled by the worker harness (configure()); kept at module level so that a
# second Run.get_context() sees the same values.
_state = {"side_inputs": {}, "agent": None}


def configure(side_inputs=None, agent_name=None):
    """Called by the worker harness before it imports the entry script."""
    _state["side_inputs"] = dict(side_inputs or {})
    _state["agent"] = agent_name
    Run._context = None


def _plain(value, what):
    """``value`` as JSON data, or TypeError naming the metric."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, dict):
        return dict((str(k), _plain(v, what)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [_plain(v, what) for v in value]
    if isinstance(value, (datetime.date, datetime.time)):  # pandas Timestamp too
        return value.isoformat()
    module = type(value).__module__
    if module == "numpy" and hasattr(value, "tolist"):  # numpy scalars and arrays
        return _plain(value.tolist(), what)
    if module.startswith("pandas") and hasattr(value, "tolist"):  # Series, Index
        return _plain(value.tolist(), what)
    raise TypeError(
        "%s: cannot record a value of type %s (expected a number, a string, a bool, "
        "or lists / dicts of them)" % (what, type(value).__name__)
    )


def _now():
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (now.microsecond // 1000)


def _append(record):
    line = json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    path = os.environ.get(_shim.METRICS_VAR)
    if not path:
        sys.stderr.write("stepgraph offline run (no %s): %s\n" % (_shim.METRICS_VAR, line))
        return
    data = (line + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        while data:
            written = os.write(fd, data)
            data = data[written:]
    finally:
        os.close(fd)


class Run(object):
    """An offline run: metrics go to the step's ``metrics.jsonl``.

    Get it with :meth:`Run.get_context`; ``Run(experiment, run_id)`` needs a
    workspace and is not supported locally.
    """

    _context = None

    def __init__(self, experiment=None, run_id=None, *args, **kwargs):
        raise UserErrorException(
            _shim.unsupported_message("azureml.core.Run(experiment, run_id)")
            + "; use Run.get_context()"
        )

    @classmethod
    def get_context(cls, allow_offline=True, used_for_context_manager=False, **kwargs):
        """The run of this step (one per process)."""
        if not allow_offline:
            raise RunEnvironmentException(
                "Run.get_context(allow_offline=False): steps run by stepgraph are not Azure "
                "runs; Run.get_context() gives an offline run that records metrics locally"
            )
        if cls._context is None:
            run = object.__new__(cls)
            run._id = "OfflineRun_%s" % uuid.uuid4()
            run._metrics = {}
            run._tags = {}
            cls._context = run
        return cls._context

    # -- identity ------------------------------------------------------------

    @property
    def id(self):
        """``OfflineRun_<uuid>``, as Azure names offline runs."""
        return self._id

    @property
    def input_datasets(self):
        """The step's named inputs: name -> local path (a copy)."""
        inputs = dict(_shim.json_env(_shim.INPUTS_VAR))
        inputs.update(_state["side_inputs"])
        return inputs

    # -- metrics -------------------------------------------------------------

    def _record(self, kind, name, value, description, **extra):
        what = "Run.%s(%r)" % (kind, name)
        if not isinstance(name, str) or not name:
            raise UserErrorException("%s: the name must be a non-empty string" % what)
        record = {"time": _now()}
        if _state["agent"]:
            record["agent"] = _state["agent"]
        record.update({"kind": kind, "name": name, "value": _plain(value, what)})
        if description:
            record["description"] = str(description)
        record.update(extra)
        _append(record)
        if kind != "tag":
            self._metrics.setdefault(name, []).append(record["value"])

    def log(self, name, value, description="", step=None):
        """Record a scalar metric (a number or a string)."""
        extra = {} if step is None else {"step": _plain(step, "Run.log(%r) step" % name)}
        self._record("log", name, value, description, **extra)

    def log_row(self, name, description=None, **kwargs):
        """Record a row of named values: ``run.log_row("fit", x=1, y=0.5)``."""
        self._record("log_row", name, kwargs, description)

    def log_list(self, name, value, description=""):
        """Record a list of values."""
        self._record("log_list", name, list(value), description)

    def log_table(self, name, value, description=""):
        """Record a table: a dict of column name -> list of values."""
        if not isinstance(value, dict):
            raise UserErrorException(
                "Run.log_table(%r): the value must be a dict of column -> list" % name
            )
        self._record("log_table", name, value, description)

    def tag(self, key, value=None):
        """Tag the run (value defaults to "")."""
        value = "" if value is None else str(value)
        self._tags[key] = value
        self._record("tag", key, value, None)

    def set_tags(self, tags):
        """Several tags at once."""
        for key, value in dict(tags).items():
            self.tag(key, value)

    def get_tags(self):
        """The tags set by this process."""
        return dict(self._tags)

    def get_metrics(self, name=None, **kwargs):
        """Metrics logged by this process: a value, or the list of values logged twice or more."""
        metrics = dict((k, v[0] if len(v) == 1 else list(v)) for k, v in self._metrics.items())
        if name is not None:
            return {name: metrics[name]} if name in metrics else {}
        return metrics

    def flush(self, timeout_seconds=300):
        """Metrics are written at once: nothing to do."""

    def complete(self, _set_status=True):
        """Nothing to do locally."""

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError("'Run' object has no attribute %r" % name)
        raise AttributeError(_shim.unsupported_message("azureml.core.Run.%s" % name))

    def __repr__(self):
        return "Run(id=%r, offline=True)" % self._id


__getattr__ = _shim.module_getattr(__name__, __all__ + ["configure"])
