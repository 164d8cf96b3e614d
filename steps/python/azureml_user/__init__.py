"""Stand-in for Azure ML's ``azureml_user`` package, shipped with stepgraph.

Only ``azureml_user.parallel_run.EntryScript`` is provided: the helper that
ParallelRunStep entry scripts use to get their logger and output folder.
"""
