"""The kopf registrations stay as thin and cheap as the handlers' docstrings promise."""

from __future__ import annotations

import inspect

import kopf

import gastown.handlers
from gastown.handlers import watches
from gastown.handlers.startup import NoEssenceDiffBaseStorage


def test_no_change_detecting_handlers_so_the_diff_base_may_stay_empty() -> None:
    """`NoEssenceDiffBaseStorage` is only correct while nothing compares essences."""
    assert gastown.handlers  # registered on import
    registry = kopf.get_default_registry()
    assert list(registry._changing.get_all_handlers()) == []
    assert registry._watching.get_all_handlers()  # the on.event handlers are there


def test_the_diff_base_storage_copies_nothing() -> None:
    storage = NoEssenceDiffBaseStorage(prefix="gastown.dev", key="last-handled-configuration")
    body = kopf.Body({"metadata": {"name": "x"}, "spec": {"big": list(range(1000))}})
    assert storage.build(body=body) == {}


def test_watch_handlers_are_coroutines_not_thread_pool_jobs() -> None:
    names = ["town_event", "bead_event", "convoy_event", "agent_event", "pod_event"]
    assert all(inspect.iscoroutinefunction(getattr(watches, name)) for name in names)


def test_the_pod_watch_is_filtered_by_the_api_server_and_nothing_else_is() -> None:
    from kopf._cogs.structs.references import Resource

    from gastown.handlers.startup import watch_only_agent_pods

    settings = kopf.OperatorSettings()
    watch_only_agent_pods(settings)
    pods = Resource(group="", version="v1", plural="pods", kind="Pod", namespaced=True)
    beads = Resource(
        group="gastown.dev", version="v1alpha1", plural="beads", kind="Bead", namespaced=True
    )
    assert settings.watching.label_selectors.collect(pods) == ["gastown.dev/town"]
    assert settings.watching.label_selectors.collect(beads) == []
