"""``make demo`` run again after an upgrade: the demo's simulator stage replaces its own runs
of older scenario content (it refused and failed the whole demo when a catalog scenario had
changed since the last `make demo` in the same checkout)."""

from __future__ import annotations

import json

from flk.impl.lab import demo


def test_the_demo_replaces_its_own_runs_of_older_scenario_content(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "FLAGSHIP_CRR", ["crr-normal"])
    first = demo.stage_sim(tmp_path)
    assert first.status == "pass", first.details
    stored = tmp_path / "crr-normal" / "1" / "results.json"
    doc = json.loads(stored.read_text(encoding="utf-8"))
    ours = doc["stamp"]["run_key"]
    doc["stamp"]["run_key"] = "0" * 64  # a run of other scenario content, as an older checkout wrote it
    stored.write_text(json.dumps(doc), encoding="utf-8")
    again = demo.stage_sim(tmp_path)
    assert again.status == "pass", again.details
    assert json.loads(stored.read_text(encoding="utf-8"))["stamp"]["run_key"] == ours
