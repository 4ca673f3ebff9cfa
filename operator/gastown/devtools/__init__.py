"""Development and test tooling: the local control plane and the local node runner.

Nothing here is part of the production operator; it gives developers and CI a real Kubernetes
API server (and a stand-in kubelet) on a machine without Docker.
"""
