"""stepgraph's ``azureml.core.model``: ``Model.get_model_path`` for declared models.

A step declares the models it reads (``"models": ["iris-prs"]`` in a spec,
``.model(..)`` in Rust). stepgraph hashes them into the step's key and lays
them out read-only as Azure does, ``<AZUREML_MODEL_DIR>/<name>/<version>/<the
registered file or folder>``, and passes the declarations in
``STEPGRAPH_MODELS``. ``Model.get_model_path`` answers from those
declarations only: asking for any other model (or another version) fails,
naming the step and the fix, and never looks for undeclared files (a file the
key does not cover would break reuse).
"""
import os

from azureml import _shim
from azureml.exceptions import ModelNotFoundException, UserErrorException, WebserviceException

__all__ = ["Model"]


class _ModelType(type):
    """Makes ``Model.register(...)`` & co. fail saying they are not supported locally."""

    def __getattr__(cls, name):
        if name.startswith("_"):
            raise AttributeError("type object 'Model' has no attribute %r" % name)
        raise AttributeError(_shim.unsupported_message("azureml.core.Model.%s" % name))


def _declared_models():
    """{name: {"version": int, "path": str or None}} from STEPGRAPH_MODELS."""
    models = {}
    for name, entry in _shim.json_env(_shim.MODELS_VAR).items():
        if not isinstance(entry, dict):
            entry = {}
        version = entry.get("version", 1)
        models[name] = {"version": version, "path": entry.get("path")}
    return models


def _describe(models):
    return ", ".join("%s:%s" % (n, m["version"]) for n, m in sorted(models.items())) or "none"


def _layout_path(name, version):
    """Azure's answer for the layout: the one file or folder in <dir>/<name>/<version>."""
    root = os.environ.get(_shim.MODEL_DIR_VAR)
    if not root:
        raise ModelNotFoundException(
            "Model.get_model_path(%r): %s is not set, so the models of %s were not "
            "laid out" % (name, _shim.MODEL_DIR_VAR, _shim.step_ref())
        )
    folder = os.path.join(root, name, str(version))
    try:
        entries = os.listdir(folder)
    except OSError as exc:
        raise ModelNotFoundException(
            "Model.get_model_path(%r): the model of %s is missing at %s: %s"
            % (name, _shim.step_ref(), folder, exc)
        )
    if len(entries) != 1:
        raise WebserviceException(
            "Dir %s can contain only 1 file or folder. Found %s" % (folder, sorted(entries))
        )
    return os.path.join(folder, entries[0])


class Model(_ModelType("_ModelBase", (object,), {})):
    """A registered model. Locally, only :meth:`get_model_path` is provided."""

    def __init__(self, workspace=None, name=None, *args, **kwargs):
        raise UserErrorException(
            _shim.unsupported_message("azureml.core.Model(workspace, ...)")
            + "; use Model.get_model_path(name) for the models the step declares"
        )

    @staticmethod
    def get_model_path(model_name, version=None, _workspace=None):
        """The path of a model the step declared, as Azure returns it.

        The registered file for a one-file model, the registered folder
        otherwise: ``<AZUREML_MODEL_DIR>/<model_name>/<version>/<file or folder>``.
        ``version`` defaults to the declared one; ``_workspace`` is ignored.

        :raises ModelNotFoundException: the step did not declare ``model_name``.
        :raises WebserviceException: ``version`` is not an int, or not the declared one.
        """
        if version is not None and not isinstance(version, int):
            raise WebserviceException("version should be an int")
        if model_name is None:
            raise WebserviceException("model_name is None")
        step = _shim.step_ref()
        models = _declared_models()
        entry = models.get(model_name)
        if entry is None:
            raise ModelNotFoundException(
                "Model.get_model_path(%r): %s does not declare model %r (it declares: %s); "
                "add it to `models` of %s (in a spec: \"models\": [\"%s\"] on the step, "
                "with its path under the top-level \"models\"; in Rust: .model(..))"
                % (model_name, step, model_name, _describe(models), step, model_name)
            )
        declared = entry["version"]
        if version is not None and version != declared:
            raise WebserviceException(
                "Model.get_model_path(%r, version=%r): %s declares version %s of model %r; "
                "to read version %s, declare it in `models` of %s (\"%s:%s\", with that "
                "version under the top-level \"models\")"
                % (model_name, version, step, declared, model_name, version, step, model_name,
                   version)
            )
        path = entry["path"] or _layout_path(model_name, declared)
        if not os.path.exists(path):
            raise ModelNotFoundException(
                "Model.get_model_path(%r): the model of %s is missing at %s"
                % (model_name, step, path)
            )
        return path

    def __repr__(self):
        return "Model()"


__getattr__ = _shim.module_getattr(__name__, __all__)
