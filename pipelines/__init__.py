"""Kubeflow Pipelines: the training pipeline's components and definition, its local runner,
and compile / submit / schedule against a Kubeflow Pipelines endpoint."""
