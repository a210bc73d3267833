"""mtlkit report: a real tiny run folder and a hand-made bench folder give a self-contained HTML report (checked
in headless Chromium: it opens and its images load) and a Markdown summary."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from mtlkit.analysis.report import write_report
from mtlkit.cli import main
from mtlkit.errors import MtlkitError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run of examples/synthetic.yaml: 1 epoch on 500 rows, with every diagnostic that exists."""
    out = tmp_path_factory.mktemp("report") / "run"
    status = main(
        [
            "train",
            str(ROOT / "examples" / "synthetic.yaml"),
            "--out",
            str(out),
            "--set",
            "training.epochs=1",
            "--set",
            "data.params.train_rows=500",
            "--set",
            "data.params.valid_rows=300",
            "--set",
            "data.params.test_rows=300",
            "--set",
            "training.progress=false",
        ]
    )
    assert status == 0
    return out


def external_references(page: str) -> list[str]:
    """src/href attribute values that point outside the page (anything but data: URIs and #anchors)."""
    values = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page, flags=re.IGNORECASE)
    return [v for v in values if not (v.startswith("data:") or v.startswith("#"))]


def test_run_report(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(run_dir)]) == 0
    assert "run report" in capsys.readouterr().out
    page = (run_dir / "report.html").read_text()
    assert external_references(page) == []
    assert "http:" not in page
    assert "https:" not in page
    assert page.count('<img src="data:image/png;base64,') >= 1
    assert "mmoe" in page
    assert "Best epoch 1 of 1" in page
    for task in ("y1", "y2"):
        assert f"<td>{task}</td>" in page or f'<td class="">{task}</td>' in page
    markdown = (run_dir / "report.md").read_text()
    assert "](plots/curves.png)" in markdown
    assert (run_dir / "plots" / "curves.png").is_file()
    assert "| y1 |" in markdown


def test_report_does_not_replace_an_out_file_without_overwrite(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "notes.html"
    out.write_text("someone's notes")
    assert main(["report", str(run_dir), "--out", str(out)]) == 2
    assert f"{out} exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_text() == "someone's notes"
    assert main(["report", str(run_dir), "--out", str(out), "--overwrite"]) == 0
    assert "<html" in out.read_text()


def test_bench_report(bench_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere" / "bench.html"
    assert main(["report", str(bench_dir), "--out", str(out)]) == 0
    page = out.read_text()
    assert external_references(page) == []
    assert page.count('<img src="data:image/png;base64,') == 2  # one Pareto scatter, the bars
    # the summary table: baseline and every configuration, with the verdict styling and Delta_m
    assert "single_task (baseline)" in page
    assert page.count("<td>shared_bottom</td>") == 2
    assert page.count("<td>mmoe</td>") >= 2
    assert '<td class="num better">' in page
    assert '<td class="num worse">' in page
    # text is escaped: the rule holds "<&>"
    assert "&lt;&amp;&gt;" in page
    assert "<&>" not in page
    # the failed run is listed
    failed = page.split("Failed or unfinished runs", 1)[1]
    assert "runs/mmoe-pcgrad-seed1" in failed
    markdown = (bench_dir / "report.md").read_text()
    assert "](plots/pareto_income__marital.png)" in markdown
    assert "](plots/task_bars.png)" in markdown
    assert "| mmoe | pcgrad |" in markdown


def test_run_report_with_diagnostics(tmp_path: Path, make_run: Callable[..., Path]) -> None:
    folder = make_run(tmp_path / "run")
    files = write_report(folder)
    page = files.html.read_text()
    assert page.count('<img src="data:image/png;base64,') == 4  # curves, conflicts, gates, affinity
    assert "Diagnostics" in page
    assert "a / b" in page
    assert "config.yaml is missing" in page  # said plainly, not an error
    assert external_references(page) == []


def test_report_rejects_a_folder_that_is_neither(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("x")
    assert main(["report", str(tmp_path)]) == 2
    assert "neither a run folder" in capsys.readouterr().err
    with pytest.raises(MtlkitError, match="not a folder"):
        write_report(tmp_path / "missing")


def test_report_names_a_malformed_metrics_file(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "metrics.json").write_text('{"valid": 3}')
    with pytest.raises(MtlkitError, match=re.escape(str(copy / "metrics.json"))):
        write_report(copy)


# ------------------------------------------------------------------------------------------ browser
PROBE = """<script>
window.addEventListener("load", () => {
  const widths = Array.from(document.images, (img) => (img.complete ? img.naturalWidth : 0));
  document.body.setAttribute("data-image-widths", widths.join(","));
});
</script>"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_opens_in_headless_chromium_and_its_images_load(bench_dir: Path, tmp_path: Path) -> None:
    browser = chromium()
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing in CI: .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium not installed (apt-get install -y --no-install-recommends chromium)")
    page = write_report(bench_dir).html.read_text()
    # A test copy with a probe script; the page's own policy still forbids every non-data: image.
    csp = html.escape("default-src 'none'; img-src data:; style-src 'unsafe-inline'")
    assert csp in page
    # plus one external image, which the page's policy must block (so the probe can see a failure)
    blocked = '<img src="https://example.invalid/x.png" alt="external">'
    probe_page = page.replace(csp, csp + html.escape("; script-src 'unsafe-inline'"))
    probe_page = probe_page.replace("</body>", blocked + PROBE + "</body>")
    probe = tmp_path / "probe.html"
    probe.write_text(probe_page)
    result = subprocess.run(
        [browser, "--headless=new", "--disable-gpu", "--no-sandbox", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    match = re.search(r'data-image-widths="([^"]*)"', result.stdout)
    assert match is not None, f"the probe did not run; dump starts: {result.stdout[:500]}"
    widths = [int(w) for w in match.group(1).split(",")]
    assert len(widths) == 3
    assert all(w > 0 for w in widths[:2]), widths  # the report's two plots loaded
    assert widths[2] == 0  # the external image did not
    assert "Bench report" in result.stdout
