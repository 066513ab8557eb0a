"""Project-level promises: dependency lists agree, public names are sorted and exported."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"python-duckdb": "duckdb", "pytorch": "torch"}


def _normalise(spec: str) -> tuple[str, str]:
    match = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", spec.strip())
    assert match, spec
    name = match.group(1).lower().replace("_", "-")
    return CONDA_NAMES.get(name, name), match.group(2).replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(_normalise(s) for s in project["dependencies"] + project["optional-dependencies"]["dev"])
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = lines.index("dependencies:")
    deps = [line.strip()[2:] for line in lines[start + 1 :] if line.startswith("  - ")]
    conda = dict(_normalise(s) for s in deps)
    assert conda.pop("python") == ">=3.11"
    assert conda.pop("pip") == ""
    assert conda == wanted


SUBPACKAGES = ["lorabench", "lorabench.files", "lorabench.samples", "lorabench.errors", "lorabench.cli",
               "lorabench.catalog", "lorabench.importer", "lorabench.sdnext", "lorabench.widgets", "lorabench.queue"]


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_public_names_sorted_and_importable(name):
    module = importlib.import_module(name)
    exported = module.__all__
    assert exported == sorted(exported, key=lambda s: (not s.isupper(), s)) or exported == sorted(exported)
    for attr in exported:
        assert hasattr(module, attr), f"{name}.{attr} is in __all__ but missing"


def test_modules_stay_small():
    for path in (ROOT / "lorabench").rglob("*.py"):
        lines = path.read_text().count("\n")
        assert lines <= 550, f"{path.relative_to(ROOT)} has {lines} lines; split it"


def test_every_error_has_code_and_hint():
    from lorabench import errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.LorabenchError)
        assert cls.code and cls.hint, name
        assert cls.__doc__, name
        assert name in errors.__doc__, f"{name} missing from the tree in errors' docstring"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme
    assert "make demo" in readme
    assert "make test" in ci
