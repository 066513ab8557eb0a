"""The `lorabench` command line: inspect, import, search, export, backup/restore, demo."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from lorabench.cli import main

LORABENCH = [sys.executable, "-m", "lorabench"]


def run(args, **kw):
    return subprocess.run([*LORABENCH, *map(str, args)], capture_output=True, text=True, **kw)


def test_inspect_json_one_file_is_an_object(by_producer, capsys):
    path = by_producer["kohya-sdxl-pony"].path
    assert main(["inspect", "--json", "--hash", str(path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["base_model"] == "sdxl" and doc["base_model_hint"] == "pony"
    assert len(doc["hashes"]["autov3"]) == 12


def test_inspect_several_files_with_errors(by_producer, tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    good = by_producer["peft-flux"].path
    code = main(["inspect", "--json", str(good), str(bad), str(tmp_path / "nope.safetensors")])
    assert code == 1
    docs = json.loads(capsys.readouterr().out)
    assert [d.get("error", {}).get("code") for d in docs] == [None, "header_too_large", "not_found"]
    assert docs[0]["format"] == "peft"
    assert set(docs[1]["error"]) == {"code", "message", "hint"}


def test_inspect_never_shows_a_traceback(tmp_path):
    files = []
    for i, payload in enumerate([b"", b"\x80\x04junk", b"PK\x03\x04zip", struct.pack("<Q", 4) + b"[1]x"]):
        p = tmp_path / f"f{i}.safetensors"
        p.write_bytes(payload)
        files.append(p)
    out = run(["inspect", *files])
    assert out.returncode == 1
    assert "Traceback" not in out.stderr + out.stdout
    assert len(out.stderr.strip().splitlines()) == 4


def test_inspect_summary_strips_terminal_escapes(tmp_path, capsys):
    meta = {"ss_output_name": "evil\x1b[2J\x1b]0;pwned\x07name", "ss_network_module": "networks.lora"}
    header = json.dumps({"__metadata__": meta}).encode()
    header += b" " * (-len(header) % 8)
    p = tmp_path / "esc.safetensors"
    p.write_bytes(struct.pack("<Q", len(header)) + header)
    assert main(["inspect", str(p)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "evil?[2J" in out


def test_python_dash_m_and_console_script_agree(by_producer):
    path = by_producer["kohya-sd15-lora"].path
    out = run(["inspect", "--json", path])
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["base_model"] == "sd1"
    script = shutil.which("lorabench", path=str(Path(sys.executable).parent))
    assert script, "the lorabench console script is installed beside the interpreter"
    out2 = subprocess.run([script, "inspect", "--json", str(path)], capture_output=True, text=True)
    assert json.loads(out2.stdout) == json.loads(out.stdout)


def test_import_search_export_backup_restore(showcase, tmp_path, capsys):
    catalog = tmp_path / "c.duckdb"
    lib = showcase.root
    assert main(["import", "--path", str(lib), "--catalog", str(catalog), "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) >= {"added", "changed", "moved", "missing", "errors", "unchanged"}
    assert len(report["added"]) == len(showcase.files)
    assert {e["code"] for e in report["errors"]} == {"unsafe_format"}
    assert main(["import", str(lib), "--catalog", str(catalog), "--json", "--strict"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["unchanged"] == len(showcase.files) and again["added"] == []

    assert main(["search", "base:sdxl", "--catalog", str(catalog), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["base_model"] == "sdxl" for r in rows)
    for key in ("id", "path", "name", "base_model", "algorithm", "rank", "rating", "favorite", "missing",
                "sha256", "autov2", "autov3", "trigger_words"):  # fmt: skip
        assert key in rows[0]
    assert main(["search", "--catalog", str(catalog), "--json", "--limit", "2"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2

    assert main(["search", "foo:bar", "--catalog", str(catalog)]) == 1
    assert "foo" in capsys.readouterr().err

    out = tmp_path / "sdxl.parquet"
    assert main(["export", str(out), "base:sdxl", "--catalog", str(catalog)]) == 0
    import pyarrow.parquet as pq

    assert pq.read_table(out).num_rows == len(rows)
    for ext in ("csv", "json"):
        assert main(["export", str(tmp_path / f"all.{ext}"), "--catalog", str(catalog)]) == 0
    assert len(json.loads((tmp_path / "all.json").read_text())) == len(showcase.files)

    from lorabench.catalog import Catalog

    with Catalog(catalog) as cat:
        cat.update(rows[0]["id"], rating=4, notes="keep me")
    backup = tmp_path / "backup.json"
    assert main(["backup", str(backup), "--catalog", str(catalog)]) == 0
    other = tmp_path / "other.duckdb"
    assert main(["import", str(lib), "--catalog", str(other), "--no-progress"]) == 0
    assert main(["restore", str(backup), "--catalog", str(other)]) == 0
    capsys.readouterr()
    with Catalog(other) as cat:
        restored = cat.search(f"hash:{rows[0]['sha256']}")
        assert restored[0]["rating"] == 4 and restored[0]["notes"] == "keep me"


def test_import_dry_run_changes_nothing(showcase, tmp_path, capsys):
    catalog = tmp_path / "c.duckdb"
    assert main(["import", str(showcase.root), "--catalog", str(catalog), "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["dry_run"] is True and len(plan["added"]) == len(showcase.files)
    assert len(plan["errors"]) == 2
    from lorabench.catalog import Catalog

    with Catalog(catalog) as cat:
        assert cat.count() == 0 and len(cat.runs()) == 0


def test_import_without_paths_is_a_usage_error(capsys):
    assert main(["import"]) == 2


@pytest.mark.slow
def test_demo_builds_and_summarises(tmp_path):
    out = run(["demo", "--dir", tmp_path, "--no-lab"])
    assert out.returncode == 0, out.stderr
    assert "Base models:" in out.stdout and "Refused (never loaded)" in out.stdout
    assert "flux1" in out.stdout and "loha" in out.stdout
