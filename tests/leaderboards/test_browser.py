"""The site of a real run (the pipeline fixture's `arbench run` of every control: no training of its own) in headless
Chromium: every image loads, no console error, the ranking shows every agent, a session page opens from the front
page and shows its diff; a screenshot of the front page is left in the run folder (site/screenshot.png)."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from browser import Chromium

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium (.ci/run installs it)")]


def test_site_of_a_real_run_in_chromium(pipeline):
    run_dir, _ = pipeline
    index = run_dir / "site" / "index.html"   # written by the run itself (harness/run.py publish)
    agents = set(pd.read_parquet(run_dir / "tables" / "sessions.parquet")["agent"])
    changed = edited_sessions(pd.read_parquet(run_dir / "tables" / "verifications.parquet"))
    with Chromium() as page:
        page.open(index.as_uri())
        images = page.eval("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
        ranked = page.eval("Array.from(document.querySelectorAll('table.ranking td.agent')).map(td => td.innerText)")
        assert set(ranked) == agents
        page.screenshot(run_dir / "site" / "screenshot.png")
        link = page.eval("Array.from(document.querySelectorAll('a.session-link'))"
                         f".find(a => a.innerText === '{changed[0]}').href")
        page.open(link)
        assert page.eval("document.querySelector('h1').innerText") == f"Session {changed[0]}"
        diff = page.eval("document.querySelector('.diff') && document.querySelector('.diff').innerText") or ""
        assert "train.py" in diff and "\n+" in diff, diff[:500]
        assert page.errors == []
    assert (run_dir / "site" / "screenshot.png").stat().st_size > 10_000
    assert images and all(width > 0 for _, width in images), images


def edited_sessions(verifications: pd.DataFrame) -> list[str]:
    """Sessions whose final train.py is not the baseline's: their page has a diff."""
    hashes = verifications.groupby(["session_id", "role"])["train_py_hash"].first().unstack()
    return sorted(hashes.index[hashes["final"] != hashes["baseline"]])
