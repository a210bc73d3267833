"""Downloading data files, tested against a local HTTP server on 127.0.0.1 (no outside network)."""

from __future__ import annotations

import gzip
import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from mtlkit import DataError, load_dataset
from mtlkit.data.datasets import census_income
from mtlkit.data.download import download_file


def _census_line(rng: np.random.Generator) -> str:
    """One row in the UCI layout: 42 fields, each after ', ' as in the real files."""
    fields = []
    for name in census_income.COLUMNS:
        if name in census_income.NUMERIC or name == "instance_weight":
            fields.append(str(int(rng.integers(0, 90))))
        elif name == "income_50k":
            fields.append(rng.choice(["- 50000.", "50000+."]))
        elif name == "marital_stat":
            fields.append(rng.choice(["Never married", "Divorced", "Married-civilian spouse present"]))
        elif name == "education":
            fields.append(rng.choice(["Children", "High school graduate", "Bachelors degree(BA AB BS)"]))
        else:
            fields.append(f"v{int(rng.integers(0, 4))}")
    return ", ".join(fields) + "\n"


def _write_census(path: Path, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with gzip.open(path, "wt") as handle:
        handle.writelines(_census_line(rng) for _ in range(rows))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A quiet HTTP server on 127.0.0.1 serving ``tmp_path / 'served'``; yields (base URL, folder)."""
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/census/", served
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_census_downloads_both_files_then_uses_the_official_split(
    server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base_url, served = server
    (served / "census").mkdir()
    _write_census(served / "census" / "census-income.data.gz", 300, seed=1)
    _write_census(served / "census" / "census-income.test.gz", 120, seed=2)
    monkeypatch.setitem(census_income.EXPECTED_ROWS, "train", 300)
    monkeypatch.setitem(census_income.EXPECTED_ROWS, "test", 120)
    root = tmp_path / "cache"

    splits = load_dataset("census_income", data_dir=str(root), base_url=base_url)

    for name in ("census-income.data.gz", "census-income.test.gz"):
        assert (root / "census-income" / name).read_bytes() == (served / "census" / name).read_bytes()
    assert not list((root / "census-income").glob("*.part"))
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (300, 60, 60)
    assert "train = census-income.data" in splits.note
    # a second load reads the files already there: the server may be gone
    (served / "census" / "census-income.data.gz").unlink()
    again = load_dataset("census_income", data_dir=str(root), base_url=base_url)
    assert len(again.train) == 300


def test_download_of_a_missing_file_is_a_clear_error_and_leaves_nothing(
    server: tuple[str, Path], tmp_path: Path
) -> None:
    base_url, _ = server
    dest = tmp_path / "out" / "census-income.test.gz"
    with pytest.raises(DataError, match=r"could not download .*census-income.test.gz .*by hand"):
        download_file(base_url + "census-income.test.gz", dest, quiet=True)
    assert not dest.exists()
    assert not dest.with_name(dest.name + ".part").exists()


def test_a_truncated_gzip_is_rejected_and_not_kept(server: tuple[str, Path], tmp_path: Path) -> None:
    base_url, served = server
    (served / "census").mkdir()
    good = served / "census" / "whole.gz"
    _write_census(good, 50, seed=3)
    (served / "census" / "cut.gz").write_bytes(good.read_bytes()[:-40])
    dest = tmp_path / "cut.gz"
    with pytest.raises(DataError, match="not a whole gzip file"):
        download_file(base_url + "cut.gz", dest, quiet=True)
    assert not dest.exists()
    with pytest.raises(DataError, match="has 50 lines, expected 51"):
        download_file(base_url + "whole.gz", tmp_path / "whole.gz", expected_lines=51, quiet=True)
    assert not (tmp_path / "whole.gz").exists()
    assert download_file(base_url + "whole.gz", tmp_path / "ok.gz", expected_lines=50, quiet=True).exists()
