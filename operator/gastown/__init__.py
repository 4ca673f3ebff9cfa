"""gastown: a Kubernetes operator that runs a town of AI coding agents."""

__version__ = "0.1.0"
