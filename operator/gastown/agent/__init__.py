"""The in-pod agent runtime: workspace, git, coding-agent adapters, the refinery and `gt`.

Nothing here talks to Kubernetes directly: the Agent object is reached through an
`AgentChannel` (see `gastown.agent.channel`), whose Kubernetes implementation lives in
`gastown.kube`.
"""
