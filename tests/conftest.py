"""Shared fixtures: sample libraries are built once per session (they are read-only in tests)."""

from __future__ import annotations

import pytest

from lorabench.samples import build_library


@pytest.fixture(scope="session")
def showcase(tmp_path_factory):
    """The showcase library: one LoRA per producer, sidecars of every kind, previews, decoys."""
    return build_library(tmp_path_factory.mktemp("showcase") / "library", seed=0)


@pytest.fixture(scope="session")
def by_producer(showcase):
    return {f.expected["producer"]: f for f in showcase.files}
