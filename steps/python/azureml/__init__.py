"""stepgraph's stand-in for Azure ML's ``azureml`` package, shipped with the harness.

It provides what ParallelRunStep entry scripts use at run time:

* ``azureml.core.Model`` (also ``azureml.core.model.Model``):
  ``Model.get_model_path(model_name, version=None, _workspace=None)`` for the
  models the step declared;
* ``azureml.core.Run`` (also ``azureml.core.run.Run``): ``Run.get_context()``,
  an offline run whose ``log``, ``log_row``, ``log_list``, ``log_table`` and
  ``tag`` record metrics into the step's run folder (``metrics.jsonl``), and
  whose ``input_datasets`` are the step's named inputs;
* ``azureml.exceptions``: the exception classes those raise.

Importing anything else under ``azureml`` fails with an ImportError that names
it and says it is not supported locally (see ``azureml._shim``).
"""
from azureml import _shim

_shim.install_finder()

__all__ = ["core", "exceptions"]

__getattr__ = _shim.module_getattr(__name__, [], submodules=("core", "exceptions"))
