"""The platform's plug points: pipeline command groups mounted from the `concord.cli` entry
points, and the SDK facade forwarding each call to its per-service client unchanged."""

from __future__ import annotations

import inspect
from importlib.metadata import EntryPoint

import pytest
import typer

import concord.cli as cli
from concord.clients import Concord, EncoderClient, GeneratorClient, RetrievalClient, ScorerClient
from concord.config import load_settings

FORWARDED = {
    "encoder": (EncoderClient, ("encode_texts", "encode_images")),
    "retrieval": (RetrievalClient, ("index", "search_text", "search_image")),
    "scorer": (ScorerClient, ("score", "explain")),
    "generator": (GeneratorClient, ("generate", "customize", "get_job", "list_concepts")),
}


def test_pipeline_groups_come_from_entry_points() -> None:
    assert "data" in {group.name for group in cli.app.registered_groups}


def test_a_plugin_whose_package_is_not_installed_is_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ghost = EntryPoint("ghost", "not_an_installed_package.cli:app", cli.ENTRY_POINT_GROUP)
    monkeypatch.setattr(cli, "entry_points", lambda group: [ghost])
    assert cli.mount_plugins(typer.Typer()) == []


@pytest.mark.parametrize("service", sorted(FORWARDED))
def test_concord_forwards_to_the_service_client(service: str) -> None:
    cls, methods = FORWARDED[service]
    sdk = Concord(load_settings())  # channels connect lazily: no server needed
    try:
        client = getattr(sdk, service)
        assert isinstance(client, cls)
        for name in methods:
            method = getattr(sdk, name)
            assert method.__self__ is client, name
            assert inspect.signature(getattr(Concord, name)) == inspect.signature(
                getattr(cls, name)
            ), name
            assert getattr(Concord, name).__doc__ == getattr(cls, name).__doc__, name
    finally:
        sdk.close()
