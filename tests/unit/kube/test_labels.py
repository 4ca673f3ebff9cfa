"""The Town selector of a shard: Kubernetes label selector text, matched like the API server."""

from __future__ import annotations

import pytest

from gastown.kube.labels import parse_selector

SHARD = "gastown.dev/shard"


@pytest.mark.parametrize(
    ("selector", "labels", "selected"),
    [
        ("", {}, True),
        ("", {SHARD: "a"}, True),
        (f"{SHARD}=a", {SHARD: "a"}, True),
        (f"{SHARD}==a", {SHARD: "a"}, True),
        (f"{SHARD}=a", {SHARD: "b"}, False),
        (f"{SHARD}=a", {}, False),
        (f"{SHARD}!=a", {SHARD: "b"}, True),
        (f"{SHARD}!=a", {}, True),  # as in Kubernetes: != also selects objects without the key
        (f"{SHARD}!=a", {SHARD: "a"}, False),
        (f"{SHARD} in (a, b)", {SHARD: "b"}, True),
        (f"{SHARD} in (a,b)", {SHARD: "c"}, False),
        (f"{SHARD} notin (a,b)", {SHARD: "c"}, True),
        (f"{SHARD} notin (a,b)", {SHARD: "a"}, False),
        (SHARD, {SHARD: ""}, True),
        (SHARD, {}, False),
        (f"!{SHARD}", {}, True),
        (f"!{SHARD}", {SHARD: "a"}, False),
        (f"{SHARD} in (a,b), team=x", {SHARD: "a", "team": "x"}, True),
        (f"{SHARD} in (a,b), team=x", {SHARD: "a", "team": "y"}, False),
        (f"{SHARD}=", {SHARD: ""}, True),
    ],
)
def test_selector_matches_like_the_api_server(
    selector: str, labels: dict[str, str], selected: bool
) -> None:
    assert parse_selector(selector).matches(labels) is selected


def test_an_object_without_labels_is_judged_as_having_none() -> None:
    assert parse_selector("!team").matches(None)
    assert not parse_selector("team").matches(None)


@pytest.mark.parametrize(
    "selector",
    ["a=b=c", "=x", "a in (b", "team=bad value", "team in x", "Bad_/k=v", f"k={'v' * 64}", "a=-b"],
)
def test_a_bad_selector_is_refused_naming_the_term(selector: str) -> None:
    with pytest.raises(ValueError, match="not a label"):
        parse_selector(selector)
