"""stepgraph's ``azureml.core``: ``Model`` and ``Run`` only (see ``azureml``)."""
from azureml import _shim
from azureml.core.model import Model
from azureml.core.run import Run

__all__ = ["Model", "Run"]

__getattr__ = _shim.module_getattr(__name__, __all__, submodules=("model", "run"))
