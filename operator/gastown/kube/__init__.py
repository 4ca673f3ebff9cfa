"""The Kubernetes adapter: the only code that talks to the API server.

- `store`: in-memory indices of every town's objects, fed by watch events and by our own writes;
- `snapshot`: a `reconcile.Snapshot` from the store (no LIST calls per pass);
- `resources`: REST coordinates of our kinds and the client calls;
- `apply`: executes the reconciler's writes with optimistic concurrency;
- `pods`, `rbac`: pure builders of agent Pods and per-agent identities;
- `loop`: the per-town reconcile loop;
- `metrics`: Prometheus metrics (counts only).
"""
