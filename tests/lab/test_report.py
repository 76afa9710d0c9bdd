"""The shareable HTML report: built from a short real simulator run, rendered in headless Chromium.

The page must stand alone (inline CSS, plots as data URIs, nothing fetched), and what a
browser makes of it must still hold the tables a reader needs: the invariant table with
kind, checked count and verdict, the SLO table, the vectors per file, and the plots.
Without Chromium the rendering tests skip, except under CI=true where they fail.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.lab import report
from flk.impl.lab.demo import Stage
from flk.sim import api

IN_CI = os.environ.get("CI", "").lower() == "true"
SHORT = ["scenario.duration_s=6", "scenario.quiescence_s=6", "workload.rate_per_s=60"]


class PageParser(HTMLParser):
    """Tables by id (rows of cell texts), images (alt, src) and external references."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[tuple[str, str]] = []
        self.external: list[str] = []
        self.styles = 0
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href"):
            if attrs.get(name) and not attrs[name].startswith(("data:", "#")):
                self.external.append(attrs[name])
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id") or f"table-{len(self.tables)}", [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append((attrs.get("alt", ""), attrs.get("src", "")))
        elif tag == "style":
            self.styles += 1

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table:
            self._table[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(text: str) -> PageParser:
    parser = PageParser()
    parser.feed(text)
    return parser


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        message = "chromium not installed: run `bash scripts/install_chromium.sh`"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def headless(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", *extra, page.resolve().as_uri()]
    return subprocess.run(args, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return api.run("split-brain", seed=1, overrides=SHORT, out=out)


@pytest.fixture(scope="module")
def vectors_doc(tmp_path_factory):
    target = tmp_path_factory.mktemp("vectors") / "vectors.json"
    done = subprocess.run([sys.executable, "-m", "flk.impl", "conformance", "vectors", "--adapter", "builtin",
                           "--ops", "pcs_id,fmt9", "--json", str(target)], capture_output=True, text=True, timeout=300)
    assert target.exists(), done.stderr
    return json.loads(target.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def demo_page(short_run, vectors_doc, tmp_path_factory) -> Path:
    proofs = [{"id": "INV-ROUND.monotonic", "status": "proved", "expected": "proved", "ok": True, "seconds": 0.004}]
    stages = [Stage("vectors", "pass", 1.0, "ok", "flk conformance vectors --adapter builtin", data={"report": vectors_doc}),
              Stage("simulator", "pass" if short_run.valid else "fail", 2.0, "1 run", "flk sim run",
                    data={"run_dirs": [short_run.out_dir]}),
              Stage("proofs", "pass", 0.1, "1 proof", "flk prove --tier quick", data={"results": proofs}),
              Stage("server", "skipped")]
    return report.write_demo_report(tmp_path_factory.mktemp("report") / "report.html", stages, 3.0)


def expected_verdict(check: dict) -> str:
    if not check["ok"]:
        return "violated"
    return "not exercised" if check["checked"] == 0 else "holds"


def assert_report_content(page: PageParser, run) -> None:
    name = run.results["scenario"]
    invariants = page.tables[f"invariants-{name}"]
    assert invariants[0][:4] == ["invariant", "kind", "checked", "verdict"]
    by_id = {row[0]: row for row in invariants[1:]}
    assert set(by_id) == {c["id"] for c in run.results["invariants"]}
    for check in run.results["invariants"]:
        row = by_id[check["id"]]
        assert row[1] == check["kind"] and row[1] in ("always", "eventually", "sometimes")
        assert int(row[2]) == check["checked"]
        assert row[3].startswith(expected_verdict(check)), (check, row)
    slos = page.tables[f"slos-{name}"]
    assert [row[0] for row in slos[1:]] == [s["metric"] for s in run.results["slos"]]
    assert [row[3] for row in slos[1:]] == ["met" if s["ok"] else "missed" for s in run.results["slos"]]
    plots = sorted(p.stem for p in run.out_dir.glob("*.png"))
    assert len(plots) >= 4
    assert sorted(alt.split()[-1] for alt, _ in page.images) == plots
    for _alt, src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG")


def test_report_is_self_contained_and_holds_the_tables(demo_page, short_run, vectors_doc):
    text = demo_page.read_text(encoding="utf-8")
    page = parse(text)
    assert page.styles == 1 and not page.external
    assert_report_content(page, short_run)
    description = short_run.scenario.data["scenario"]["description"]
    assert report.esc(description) in text
    vectors = {row[0]: row for row in page.tables["vectors"][1:]}
    files = {case["file"] for case in vectors_doc["cases"]}
    assert set(vectors) == files and len(files) >= 2
    for name in files:
        passed = sum(c["file"] == name and c["status"] == "pass" for c in vectors_doc["cases"])
        assert int(vectors[name][1]) == passed
    assert page.tables["proofs"][1][:2] == ["INV-ROUND.monotonic", "proved"]
    for label in ("flk-lab", "date", "RPO", "RTO", "convergence"):
        assert label in text


def test_report_renders_in_headless_chromium(demo_page, short_run, tmp_path):
    done = headless(demo_page, tmp_path / "profile", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "flk-lab demo report" in done.stdout
    assert_report_content(parse(done.stdout), short_run)


def test_report_screenshot_is_not_blank(demo_page, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    done = headless(demo_page, tmp_path / "profile", "--window-size=1200,2400", f"--screenshot={shot}")
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    image = Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")
    assert image.size == (1200, 2400)
    assert len(image.getcolors(maxcolors=1 << 20) or range(1 << 20)) > 50  # text, tables, verdict colours


def test_run_report_covers_each_run(short_run, tmp_path):
    path = report.write_run_report([short_run.out_dir], tmp_path / "run.html")
    page = parse(path.read_text(encoding="utf-8"))
    assert_report_content(page, short_run)
    assert page.tables["scenarios"][1][0] == short_run.results["scenario"]


def test_flk_sim_report_writes_the_run_report(short_run, tmp_path):
    """``flk sim report RUN_DIR`` writes the report of a finished run (default RUN_DIR/report.html);
    a directory that holds no run is exit 2 with the reason."""
    flk = [sys.executable, "-m", "flk.impl", "sim", "report"]
    out = tmp_path / "cli.html"
    done = subprocess.run([*flk, str(short_run.out_dir), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and f"wrote {out}" in done.stdout, done.stderr
    page = parse(out.read_text(encoding="utf-8"))
    assert_report_content(page, short_run)
    bad = subprocess.run([*flk, str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not a run directory" in bad.stderr and "Traceback" not in bad.stderr


def test_report_stamp_shows_the_code_version_runs_record():
    """The page's version line comes from the same place as ``results.json``'s stamp."""
    from flk.sim.artifacts import code_version

    info, code = report.stamp(), code_version()
    assert info["flk-lab"] == (code["version"] or "unknown") and info["python"] == code["python"]
    assert ("git commit" in info) == bool(code["git_commit"])
    if code["git_commit"]:
        assert info["git commit"].startswith(code["git_commit"][:12])
        assert ("uncommitted changes" in info["git commit"]) == bool(code["git_dirty"])


@pytest.mark.parametrize(("check", "verdict"), [
    ({"ok": True, "checked": 0, "exercised": False}, "not exercised"),
    ({"ok": True, "checked": 5, "exercised": True}, "holds"),
    ({"ok": False, "checked": 5, "exercised": True, "violation_count": 3}, "violated (3)"),
    ({"ok": False, "checked": 0, "exercised": False, "violation_count": 1}, "violated (1)"),
])
def test_invariant_verdict(check, verdict):
    assert report.invariant_verdict(check) == verdict


@settings(max_examples=200, deadline=None, derandomize=True)
@given(cells=st.lists(st.one_of(st.text(), st.integers(), st.floats(allow_nan=False)), min_size=2, max_size=2))
def test_table_cells_survive_any_text(cells):
    page = parse(report.table(["a", "b"], [cells], css_id="t"))
    assert page.tables["t"][1] == [report.number(value).strip() for value in cells]
    assert not page.images and not page.external


def test_server_section_lists_load_figures_and_conformance_cases():
    conformance = {"suite": "server", "summary": {"passed": 1, "failed": 1, "skipped": 0},
                   "cases": [{"id": "srv-replay", "title": "a replay is answered", "status": "pass", "message": ""},
                             {"id": "srv-oversize", "title": "oversize body", "status": "fail", "message": "got 200"}]}
    load = {"sent": 30, "by_status": {"200": 27, "401": 3}}
    page = parse(report.server_html({"load": load, "conformance": conformance}))
    assert ["sent", "30"] in page.tables["server-load"] and ["answers 401", "3"] in page.tables["server-load"]
    assert [row[0] + " " + row[2] for row in page.tables["server-conformance"][1:]] == \
        ["srv-replay pass", "srv-oversize fail"]
