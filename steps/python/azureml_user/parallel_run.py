"""stepgraph's version of Azure ML's ``EntryScript`` helper.

Entry scripts written for Azure ML's ParallelRunStep do::

    from azureml_user.parallel_run import EntryScript

    entry_script = EntryScript()
    logger = entry_script.logger
    out = entry_script.output_dir

``EntryScript`` is a singleton: every ``EntryScript()`` returns the same
object, whose values come from the worker harness (``stepgraph_worker.py``),
which calls :func:`_configure` *before* importing the entry script, so a script
that creates an ``EntryScript()`` at import time already sees the right values.

Imported outside the harness (e.g. a user testing a script by hand) the values
fall back to the environment: ``AZUREML_BI_OUTPUT_PATH`` for ``output_dir``, the
current directory for ``working_dir``, no log folder, agent ``"worker"``.
"""
import copy
import logging
import os
import sys

__all__ = ["EntryScript"]

_LOG_FORMAT = "%(asctime)s|%(levelname)s|%(agent)s|%(message)s"

# The single source of truth, filled by _configure().  Kept at module level
# (not on the instance) so that EntryScript.__init__ can never reset it.
_state = {
    "configured": False,
    "config": {},
    "output_dir": None,
    "working_dir": None,
    "log_dir": None,
    "agent_name": "worker",
    "logger": None,
}


class _AgentFilter(logging.Filter):
    """Adds ``record.agent`` so the format can show which worker logged."""

    def __init__(self, agent_name):
        super().__init__()
        self.agent_name = agent_name

    def filter(self, record):
        record.agent = self.agent_name
        return True


def log_place(agent_name):
    """(node, process) names of this worker in Azure's log layout.

    The engine sets ``STEPGRAPH_NODE_ID`` (``0`` ...) and ``STEPGRAPH_PROCESS_NAME``
    (``process000`` ...); without them (a harness started by hand) node ``0`` and the
    agent's name."""
    node = os.environ.get("STEPGRAPH_NODE_ID") or "0"
    process = os.environ.get("STEPGRAPH_PROCESS_NAME") or agent_name or "worker"
    return node, process


def user_log_path(log_dir, kind, suffix, agent_name):
    """``<log_dir>/<kind>/<node>/<process><suffix>``, as Azure lays out ``logs/user``."""
    node, process = log_place(agent_name)
    return os.path.join(log_dir, kind, node, process + suffix)


def _build_logger(agent_name, log_dir):
    logger = logging.getLogger(agent_name)
    # Drop handlers of a previous configuration (only happens when
    # _configure is called twice in one process, e.g. in tests).
    for handler in list(logger.handlers):
        if getattr(handler, "_stepgraph", False):
            logger.removeHandler(handler)
            handler.close()
    logger.setLevel(logging.INFO)
    # Our handlers write everything already; a root handler installed by the
    # user's logging.basicConfig() would print each line a second time.
    logger.propagate = False

    formatter = logging.Formatter(_LOG_FORMAT)
    agent_filter = _AgentFilter(agent_name)

    # One place, as on Azure: logs/user/entry_script_log/<node>/<process>.log.txt (stderr
    # only without a log folder, or when the file cannot be written).
    handlers = []
    if log_dir:
        path = user_log_path(log_dir, "entry_script_log", ".log.txt", agent_name)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            handlers.append(logging.FileHandler(path, encoding="utf-8"))
        except OSError as exc:
            sys.stderr.write(
                "stepgraph: cannot write log file %r: %s\n" % (path, exc)
            )
    if not handlers:
        handlers.append(logging.StreamHandler(sys.stderr))
    for handler in handlers:
        handler._stepgraph = True
        handler.setFormatter(formatter)
        handler.addFilter(agent_filter)
        logger.addHandler(handler)
    return logger


def _configure(
    output_dir=None,
    working_dir=None,
    log_dir=None,
    agent_name=None,
    config=None,
):
    """Set the values every ``EntryScript()`` reports.  Called by the harness."""
    agent_name = agent_name or "worker"
    _state["configured"] = True
    _state["config"] = dict(config or {})
    _state["output_dir"] = output_dir
    _state["working_dir"] = working_dir
    _state["log_dir"] = log_dir
    _state["agent_name"] = agent_name
    _state["logger"] = _build_logger(agent_name, log_dir)


def _ensure_defaults():
    """Fallback configuration when used outside the stepgraph harness."""
    if not _state["configured"]:
        _configure(
            output_dir=os.environ.get("AZUREML_BI_OUTPUT_PATH"),
            working_dir=os.getcwd(),
            agent_name=os.environ.get("STEPGRAPH_AGENT_NAME") or "worker",
        )


def _state_property(key, doc):
    """A read-only property returning ``_state[key]``."""
    return property(lambda self: _state[key], doc=doc)


class EntryScript(object):
    """Per-worker helper for entry scripts (a process-wide singleton)."""

    _instance = None

    def __new__(cls, *args, **kwargs):
        if cls._instance is None:
            cls._instance = super(EntryScript, cls).__new__(cls)
        return cls._instance

    def __init__(self, *args, **kwargs):
        # Deliberately empty: all state lives in the module's _state, so a
        # second EntryScript() cannot reset anything.
        _ensure_defaults()

    @property
    def logger(self):
        """``logging.Logger`` named after the agent, writing to
        ``<log_dir>/entry_script_log/<node>/<process>.log.txt`` (stderr without a log folder)."""
        _ensure_defaults()
        return _state["logger"]

    output_dir = _state_property(
        "output_dir", "Folder for the script's own output files (``AZUREML_BI_OUTPUT_PATH``)."
    )
    working_dir = _state_property(
        "working_dir", "Scratch folder for this run (the worker's current directory)."
    )
    log_dir = _state_property("log_dir", "Folder for user logs (``logs/user``).")
    agent_name = _state_property("agent_name", "Name of this worker, e.g. ``worker-0``.")

    @property
    def config(self):
        """The worker's configuration (a copy of the engine's init message)."""
        return copy.deepcopy(_state["config"])

    @property
    def side_inputs(self):
        """Mapping of side-input name to local path (stepgraph extension)."""
        return dict(_state["config"].get("side_inputs") or {})

    def __repr__(self):
        return "EntryScript(agent_name=%r, output_dir=%r)" % (
            self.agent_name,
            self.output_dir,
        )
