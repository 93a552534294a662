"""Modelgate: train, gate and promote machine-learning models on Kubernetes."""

__version__ = "0.1.0"

GROUP = "modelgate.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
