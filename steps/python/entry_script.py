"""Legacy import path of Azure ML's helper: ``from entry_script import EntryScript``.

It is the same singleton as ``azureml_user.parallel_run.EntryScript``.
"""
from azureml_user.parallel_run import EntryScript

__all__ = ["EntryScript"]
