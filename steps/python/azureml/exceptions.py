"""Azure ML's exception classes raised by stepgraph's azureml shim.

Same names and hierarchy as ``azureml.exceptions``, so that ``except`` clauses
of ported scripts keep working.
"""
from azureml import _shim

__all__ = [
    "AzureMLException",
    "UserErrorException",
    "WebserviceException",
    "ModelNotFoundException",
    "RunEnvironmentException",
]


class AzureMLException(Exception):
    """Base class of Azure ML's exceptions."""

    def __init__(self, exception_message="", *args, **kwargs):
        super(AzureMLException, self).__init__(exception_message, *args)
        self.message = exception_message

    def __str__(self):
        return self.message


class UserErrorException(AzureMLException):
    """A call the user must fix."""


class WebserviceException(AzureMLException):
    """Azure raises it from ``Model`` calls (e.g. a version that is not an int)."""


class ModelNotFoundException(AzureMLException):
    """``Model.get_model_path`` was asked for a model the step did not declare."""


class RunEnvironmentException(AzureMLException):
    """``Run.get_context(allow_offline=False)`` outside an Azure run."""


__getattr__ = _shim.module_getattr(__name__, __all__)
