"""Internals of stepgraph's ``azureml`` shim (not part of Azure's API).

The shim provides the few ``azureml`` names that ParallelRunStep entry scripts
use at run time (``Model.get_model_path``, ``Run.get_context()``) and makes
every other ``azureml`` import fail with an ImportError that names what is
missing and says it is not supported locally:

* a missing *module* (``import azureml.data.dataset_factory``) is refused by
  :class:`UnsupportedFinder`, a meta-path finder placed last on
  ``sys.meta_path`` when ``azureml`` is imported;
* a missing *name* of a provided module (``from azureml.core import
  Workspace``) is refused by the module-level ``__getattr__`` (PEP 562) that
  :func:`module_getattr` makes.

The step's declarations reach the shim through environment variables set by
stepgraph (documented in the README, "Coming from Azure ML"):

* ``STEPGRAPH_STEP_NAME``: the step's name, for messages;
* ``STEPGRAPH_MODELS``: JSON ``{name: {"version": n, "path": ...}}`` of the
  models the step declared (``path``, optional, is what
  ``Model.get_model_path`` returns);
* ``AZUREML_MODEL_DIR``: Azure's folder of models, ``<name>/<version>/<file or
  folder>``;
* ``STEPGRAPH_METRICS_FILE``: the JSON Lines file that ``Run.log`` & co.
  append to;
* ``STEPGRAPH_INPUT_DATASETS``: JSON ``{name: path}`` of the step's named
  inputs (side inputs given by the worker harness are added to them).
"""
import importlib
import json
import os
import sys

STEP_NAME_VAR = "STEPGRAPH_STEP_NAME"
MODELS_VAR = "STEPGRAPH_MODELS"
MODEL_DIR_VAR = "AZUREML_MODEL_DIR"
METRICS_VAR = "STEPGRAPH_METRICS_FILE"
INPUTS_VAR = "STEPGRAPH_INPUT_DATASETS"

#: What the shim provides, for error messages.
PROVIDED = "Model.get_model_path, Run.get_context and azureml.exceptions"


def unsupported_message(what):
    """The text of every "not supported locally" error."""
    return (
        "%s is not supported locally: stepgraph's azureml shim provides only %s "
        '(see "Coming from Azure ML" in stepgraph\'s README)' % (what, PROVIDED)
    )


def module_getattr(module_name, names, submodules=()):
    """A PEP 562 ``__getattr__`` for a shim module.

    ``submodules`` are imported on first access (``from azureml import
    core``); private and dunder names raise AttributeError as usual (so
    ``hasattr`` probes by pickle, inspect or mock keep working); any other
    name raises ImportError, which ``from module import Name`` passes on
    unchanged.
    """

    def __getattr__(name):
        if name in submodules:
            return importlib.import_module(module_name + "." + name)
        if name.startswith("_"):
            raise AttributeError("module %r has no attribute %r" % (module_name, name))
        raise ImportError(
            unsupported_message("%s.%s" % (module_name, name))
            + " (%s has: %s)" % (module_name, ", ".join(names) or "nothing"),
            name=module_name,
        )

    return __getattr__


class UnsupportedFinder(object):
    """Last on ``sys.meta_path``: refuses every ``azureml.*`` module nobody else found."""

    _stepgraph_azureml_shim = True

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname.startswith("azureml."):
            raise ModuleNotFoundError(unsupported_message(fullname), name=fullname)
        return None

    # Python < 3.4 style finders are not consulted by 3.8+; find_spec is enough.


def install_finder():
    """Append :class:`UnsupportedFinder` to ``sys.meta_path`` once."""
    for finder in sys.meta_path:
        if getattr(finder, "_stepgraph_azureml_shim", False):
            return
    sys.meta_path.append(UnsupportedFinder())


def step_ref():
    """The step, for messages: ``step "score"`` (``this step`` outside stepgraph)."""
    name = os.environ.get(STEP_NAME_VAR)
    return 'step "%s"' % name if name else "this step (%s is not set)" % STEP_NAME_VAR


def json_env(var):
    """The JSON object in environment variable ``var`` ({} when unset).

    Raises ValueError naming the variable when it is not a JSON object.
    """
    text = os.environ.get(var)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError("%s is not valid JSON (%s): %r" % (var, exc, text[:200]))
    if not isinstance(value, dict):
        raise ValueError("%s must be a JSON object, got: %r" % (var, text[:200]))
    return value
