"""Which Secret values the operator redacts for a town (pure parts of gastown.kube.redaction)."""

from __future__ import annotations

from gastown.kube.redaction import SecretRef, select_values, town_secret_refs
from gastown.model import Town

TOWN = Town.from_api(
    {
        "metadata": {"name": "demo", "namespace": "ns"},
        "spec": {
            "rigs": [
                {"name": "app", "gitUrl": "https://g/a.git", "credentialsSecret": "git-creds"},
                {
                    "name": "lib",
                    "gitUrl": "https://g/l.git",
                    "credentialsSecret": "git-creds",
                    "mergeStrategy": "pr",
                    "pullRequests": {
                        "kind": "github",
                        "apiUrl": "https://api.example.com",
                        "repository": "acme/lib",
                        "tokenSecret": {"name": "gh", "key": "token"},
                    },
                },
            ],
            "agent": {
                "image": "agent:1",
                "env": [{"name": "MODE", "value": "fast"}],
                "secretEnv": [
                    {"name": "A", "secretKeyRef": {"name": "keys", "key": "anthropic"}},
                    {"name": "O", "secretKeyRef": {"name": "keys", "key": "openai"}},
                ],
            },
        },
    }
)


def test_every_secret_handed_to_pods_is_referenced_once() -> None:
    assert town_secret_refs(TOWN) == {
        SecretRef("keys", "anthropic"),
        SecretRef("keys", "openai"),
        SecretRef("git-creds"),
        SecretRef("gh", "token"),
    }


def test_a_town_without_secrets_references_none() -> None:
    bare = Town.from_api(
        {
            "metadata": {"name": "t", "namespace": "ns"},
            "spec": {"rigs": [{"name": "r", "gitUrl": "/srv/r.git"}], "agent": {"image": "a"}},
        }
    )
    assert town_secret_refs(bare) == frozenset()


def test_selected_values_one_key_or_every_secret_key_of_a_mounted_secret() -> None:
    data = {
        "username": "bot",
        "known_hosts": "host ssh-ed25519 AAAA",
        "token": "ghp_x123",
        "ssh-privatekey": "KEY",
        "extra": "other-value",
    }
    assert select_values(data, SecretRef("s", "token")) == ["ghp_x123"]
    assert select_values(data, SecretRef("s", "absent")) == []
    assert sorted(select_values(data, SecretRef("s"))) == ["KEY", "ghp_x123", "other-value"]
