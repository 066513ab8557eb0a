"""The packaged notebooks: committed clean, runnable headless under papermill and nbval."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from lorabench._notebooks import (
    check_parameters,
    import_targets,
    library_chart,
    notebook_path,
    notebooks,
    run_notebook,
    sample_catalog_path,
    sample_library_path,
)
from lorabench.catalog import Catalog
from lorabench.errors import ConfigError
from lorabench.samples import build_library

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """LORABENCH_HOME in tmp (papermill and nbval kernels inherit os.environ); the default catalog too."""
    home = tmp_path / "home"
    monkeypatch.setenv("LORABENCH_HOME", str(home))
    monkeypatch.setenv("LORABENCH_CATALOG", str(tmp_path / "default-catalog.duckdb"))
    return home


def _model_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(MODEL_SUFFIXES)]


def _outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def _assert_ran_cleanly(nb: nbformat.NotebookNode) -> None:
    errors = [o for o in _outputs(nb) if o["output_type"] == "error"]
    assert not errors, errors
    stderr = "".join(o.get("text", "") for o in _outputs(nb) if o.get("name") == "stderr")
    assert "Traceback" not in stderr
    assert any("application/vnd.plotly.v1+json" in o.get("data", {}) for o in _outputs(nb)), "no chart"


# -- committed notebooks ------------------------------------------------------------------------


def test_notebooks_exist():
    assert "import.ipynb" in [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_committed_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    spec = nb.metadata.get("kernelspec", {})
    assert spec.get("name") == "python3"
    assert spec.get("language") == "python"
    assert spec.get("display_name")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "no code cells"
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell must be tagged 'parameters'"
    for cell in code:
        assert cell.get("outputs") == [], f"cell {cell.get('id')} has outputs; clear them before committing"
        assert cell.get("execution_count") is None, f"cell {cell.get('id')} has an execution count"
        assert "injected-parameters" not in cell.metadata.get("tags", [])
    assert "papermill" not in nb.metadata
    assert "widgets" not in nb.metadata


def test_import_notebook_parameters_cell_has_the_documented_defaults():
    nb = nbformat.read(notebook_path("import.ipynb"), as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    namespace: dict = {}
    exec(first.source, namespace)  # plain assignments only
    assert {k: v for k, v in namespace.items() if not k.startswith("__")} == {
        "library_paths": [], "catalog_path": None, "force_resync": False, "dry_run": False,
    }  # fmt: skip


# -- finding notebooks and refusing parameters ----------------------------------------------------


def test_notebook_path_finds_the_checkout_copy():
    assert notebook_path("import.ipynb") == ROOT / "notebooks" / "import.ipynb"
    assert notebook_path("import") == notebook_path("import.ipynb")
    assert "import.ipynb" in notebooks()


def test_installed_copy_wins(tmp_path, monkeypatch):
    """In a wheel the notebooks sit in lorabench/notebooks (hatch force-include); that copy comes first."""
    package = tmp_path / "site-packages" / "lorabench"
    (package / "notebooks").mkdir(parents=True)
    (package / "notebooks" / "import.ipynb").write_text("{}")
    (package / "notebooks" / "only_installed.ipynb").write_text("{}")
    monkeypatch.setattr("lorabench._notebooks.resources.files", lambda _name: package)
    assert notebook_path("import.ipynb") == package / "notebooks" / "import.ipynb"
    assert notebook_path("only_installed") == package / "notebooks" / "only_installed.ipynb"
    assert {"import.ipynb", "only_installed.ipynb"} <= set(notebooks())


@pytest.mark.parametrize("name", ["nope.ipynb", "../pyproject.toml", "notebooks/import.ipynb", ".hidden"])
def test_unknown_notebook_names_the_available_ones(name):
    with pytest.raises(ConfigError) as info:
        notebook_path(name)
    assert "import.ipynb" in str(info.value)


@pytest.mark.parametrize("name", ["api_token", "API_KEY", "civitai_secret", "password", "sdnext_auth", "passphrase"])
def test_secret_looking_parameters_are_refused_before_running(tmp_path, name):
    out = tmp_path / "out.ipynb"
    with pytest.raises(ConfigError, match="secret"):
        run_notebook("import.ipynb", out, **{name: "x"})
    assert not out.exists()


def test_api_token_refused(tmp_path):
    with pytest.raises(ConfigError):
        run_notebook("import.ipynb", tmp_path / "out.ipynb", api_token="x")
    assert not (tmp_path / "out.ipynb").exists()


def test_plain_parameters_pass_the_check():
    check_parameters({"library_paths": [], "catalog_path": None, "force_resync": True, "dry_run": False})
    with pytest.raises(ConfigError):
        check_parameters({"not-an-identifier": 1})


# -- helpers ----------------------------------------------------------------------------------------


def test_import_targets(home, tmp_path):
    assert import_targets(["/a", tmp_path], None) == (["/a", str(tmp_path)], None)
    assert import_targets("/a", "/c.duckdb") == (["/a"], "/c.duckdb")
    paths, catalog = import_targets([], None)
    assert paths == [str(home / "samples" / "library")]
    assert catalog == str(home / "samples" / "catalog.duckdb") == str(sample_catalog_path())
    assert import_targets([], tmp_path / "mine.duckdb")[1] == str(tmp_path / "mine.duckdb")


def test_sample_library_is_built_once(home):
    first = sample_library_path()
    files = _model_files(first)
    assert files
    assert any(p.suffix == ".ckpt" for p in files)
    marker = first / "kept.txt"
    marker.write_text("x")
    assert sample_library_path() == first
    assert marker.exists()
    assert [p.name for p in first.parent.iterdir()] == ["library"]  # no staging folder left behind


def test_library_chart(tmp_path):
    lib = build_library(tmp_path / "lib", tiny=True)
    with Catalog(tmp_path / "c.duckdb") as catalog:
        catalog.import_library([lib.root], progress=False, hashes=False)
        figure = library_chart(catalog)
    bars = {trace.name: dict(zip(trace.x, trace.y, strict=True)) for trace in figure.data}
    assert sum(sum(v.values()) for v in bars.values()) == len(lib.files)
    assert bars["lora"]["sdxl"] >= 1
    assert bars["unsafe"]["(unreadable)"] == 2
    assert figure.layout.barmode == "stack"


# -- headless runs -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_import_notebook_with_parameters(home, tmp_path):
    lib = build_library(tmp_path / "lib", count=40, tiny=True)
    (lib.root / "broken.safetensors").write_bytes(b"\xff" * 8 + b"not a header")
    (lib.root / "old.ckpt").write_bytes(pickle.dumps({"epoch": 1}))
    expected = len(_model_files(lib.root))
    assert expected == 42
    catalog_file = tmp_path / "catalog.duckdb"
    params = {"library_paths": [str(lib.root)], "catalog_path": str(catalog_file), "force_resync": False}

    out = run_notebook("import.ipynb", tmp_path / "out" / "import.ipynb", **params)

    with Catalog(catalog_file) as catalog:
        stats = catalog.stats()
        errors = catalog.errors().to_list()
    assert stats["total"] == expected
    assert stats["ok"] == 40
    assert stats["hashed"] == expected  # unreadable files are hashed too (to identify them)
    assert {(Path(e["path"]).name, e["status"]) for e in errors} == {("broken.safetensors", "error"),
                                                                      ("old.ckpt", "unsafe")}  # fmt: skip
    nb = nbformat.read(out, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    namespace: dict = {}
    exec(injected[0].source, namespace)  # the injected cell holds plain assignments
    assert {k: v for k, v in namespace.items() if not k.startswith("__")} == params
    assert nb.metadata.papermill.parameters == params
    _assert_ran_cleanly(nb)
    text = "".join(o.get("text", "") for o in _outputs(nb) if o.get("name") == "stdout")
    assert "Import completed" in text
    assert not (home / "samples").exists(), "the sample library is only built when no folder is given"
    assert not Path(os.environ["LORABENCH_CATALOG"]).exists()


@pytest.mark.slow
def test_import_notebook_defaults_use_the_sample_library(home, tmp_path):
    out = run_notebook("import.ipynb", tmp_path / "defaults.ipynb")

    library = home / "samples" / "library"
    files = _model_files(library)
    with Catalog(home / "samples" / "catalog.duckdb") as catalog:
        stats = catalog.stats()
        errors = catalog.errors().to_list()
    assert stats["total"] == len(files) > 20
    assert {e["status"] for e in errors} == {"unsafe"}
    assert len(errors) == 2
    assert not Path(os.environ["LORABENCH_CATALOG"]).exists(), "the demo must never touch the real catalog"
    nb = nbformat.read(out, as_version=4)
    _assert_ran_cleanly(nb)
    assert nb.metadata.papermill.parameters == {}


@pytest.mark.slow
def test_import_notebook_dry_run_changes_nothing(home, tmp_path):
    lib = build_library(tmp_path / "lib", count=10, tiny=True)
    catalog_file = tmp_path / "catalog.duckdb"
    out = run_notebook("import.ipynb", tmp_path / "dry.ipynb", library_paths=[lib.root], catalog_path=catalog_file,
                       dry_run=True)  # fmt: skip
    with Catalog(catalog_file) as catalog:
        assert catalog.stats()["total"] == 0
    nb = nbformat.read(out, as_version=4)
    assert not [o for o in _outputs(nb) if o["output_type"] == "error"]
    assert "Dry run" in "".join(o.get("text", "") for o in _outputs(nb) if o.get("name") == "stdout")


@pytest.mark.slow
def test_import_notebook_under_nbval(tmp_path):
    env = {**os.environ, "LORABENCH_HOME": str(tmp_path / "home"),
           "LORABENCH_CATALOG": str(tmp_path / "default-catalog.duckdb")}  # fmt: skip
    cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider", "-q",
           str(ROOT / "notebooks" / "import.ipynb")]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert (tmp_path / "home" / "samples" / "catalog.duckdb").exists()
    assert not (tmp_path / "default-catalog.duckdb").exists()
    assert json.loads((ROOT / "notebooks" / "import.ipynb").read_text())["cells"][1]["outputs"] == []
