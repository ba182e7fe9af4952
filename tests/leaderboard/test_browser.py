"""The built site in real headless Chromium: sort, filter, open a path page and the Pareto view, no console
errors; a screenshot is kept (``$SLM_ARTIFACTS`` or ``.ci-artifacts/``)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "results"))
sys.path.insert(0, str(Path(__file__).parent))
from results_builders import latencies, outcomes, write_run  # noqa: E402

from leaderboard.build import build_site  # noqa: E402

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromedriver are not installed "
                                "(Debian: apt-get install chromium chromium-driver)")
ARTIFACTS = Path(os.environ.get("SLM_ARTIFACTS", Path(__file__).parents[2] / ".ci-artifacts"))


@pytest.fixture
def driver():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield drv
    drv.quit()


def _column(driver, index: int) -> list[str]:
    from selenium.webdriver.common.by import By

    return [r.find_elements(By.TAG_NAME, "td")[index].text
            for r in driver.find_elements(By.CSS_SELECTOR, "#overview tbody tr")]


def test_site_in_chromium(driver, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    db = tmp_path / "results.duckdb"
    accs = [0.62, 0.48, 0.71, 0.55, 0.66]
    write_run(db, "r1", {f"path-{i}": {"acc_correct": outcomes(400, a, i), "sparsity": 0.1 * i,
                                       "latency": latencies(30, 0.03 + 0.01 * i, i), "energy": 0.3 + 0.1 * i}
                         for i, a in enumerate(accs)})
    site = build_site(db, tmp_path / "site")
    driver.get((site / "index.html").as_uri())
    assert len(driver.find_elements(By.CSS_SELECTOR, "#overview tbody tr")) == 5
    assert _column(driver, 0) == sorted(_column(driver, 0))  # by name at first
    header = next(th for th in driver.find_elements(By.CSS_SELECTOR, "#overview th") if th.text.startswith("quality"))
    col = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#overview th")].index(header.text)
    header.click()
    header.click()  # descending: best quality first
    values = [float(v.split(" ± ")[0]) for v in _column(driver, col)]
    assert values == sorted(values, reverse=True) and len(set(values)) == 5
    assert all(v.endswith("\nvs base —") for v in _column(driver, col))  # no base path measured the source
    assert "sorted-desc" in header.get_attribute("class")
    Select(driver.find_element(By.ID, "f-hw")).select_by_visible_text("cpu-1t")
    Select(driver.find_element(By.ID, "f-tech")).select_by_visible_text("prune.magnitude")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#overview tbody tr")) == 5
    driver.find_element(By.ID, "f-text").send_keys("path-2")
    assert _column(driver, 0) == ["path-2"]
    assert driver.find_element(By.ID, "count").text == "1 of 5 paths"
    driver.find_element(By.ID, "f-text").clear()
    driver.execute_script("document.getElementById('f-text').dispatchEvent(new Event('input'))")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#overview tbody tr")) == 5
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "leaderboard.png"))
    driver.find_element(By.LINK_TEXT, "path-3").click()
    assert driver.find_element(By.TAG_NAME, "h1").text == "path-3"
    assert "prune.magnitude" in driver.find_element(By.CSS_SELECTOR, "table.lineage").text
    assert len(driver.find_elements(By.CSS_SELECTOR, "table.metrics tbody tr")) == 3
    driver.get((site / "pareto.html").as_uri())
    assert driver.find_elements(By.CSS_SELECTOR, "svg.pareto")
    best = driver.find_elements(By.CSS_SELECTOR, "circle.front")
    assert best
    driver.save_screenshot(str(ARTIFACTS / "leaderboard-pareto.png"))
    driver.execute_script("arguments[0].parentNode.dispatchEvent(new MouseEvent('click', {bubbles: true}))", best[0])
    assert driver.current_url.endswith(".html") and "/paths/" in driver.current_url
    driver.get((site / "compare.html").as_uri() + "?a=p-path-0&b=p-path-4")
    rows = driver.find_elements(By.CSS_SELECTOR, "#comparison tbody tr")
    assert len(rows) == 3 and any("better" in td.get_attribute("class") or "worse" in td.get_attribute("class")
                                  for r in rows for td in r.find_elements(By.TAG_NAME, "td"))
    driver.get((site / "suites" / "quality.html").as_uri())
    assert len(driver.find_elements(By.CSS_SELECTOR, "#suite-table tbody tr")) == 5
    driver.find_element(By.ID, "f-suite").send_keys("path-3")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#suite-table tbody tr")) == 1
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_overview_shows_units_and_marks_failed_paths(driver, tmp_path):
    """The overview's cells in display units (%, ms) and ✗ failed marks: a failed step marks its path's empty
    columns, a failed suite run that suite's columns only."""
    from selenium.webdriver.common.by import By

    from results.store import ResultStore

    db = tmp_path / "results.duckdb"
    write_run(db, "r1", {"ok": {"acc_correct": outcomes(400, 0.6, 1), "latency": latencies(30, 0.03, 1),
                                "energy": 0.3}})
    store = ResultStore(db)
    store.record_node("r1", dict(node_hash="n-bad", kind="model", technique="prune.wanda", params={},
                                 inputs={"model": "src"}, status="failed", error="ValueError: boom"))
    store.record_path("r1", dict(path_id="p-bad", name="bad", base="builtin:tiny-llama", hardware_profile="cpu-1t",
                                 leaf_hash="n-bad", chain=["src", "n-bad"], steps=[{"technique": "prune.wanda"}],
                                 spec_snippet="x"))
    store.record_suite_run("r1", dict(run_key="m-ok", node_hash="n-ok", suite="memory", profile="quick",
                                      hardware_profile="cpu-1t", settings={}, status="failed", error="killed",
                                      metrics=[], samples=[], raw=[]))
    store.close()
    site = build_site(db, tmp_path / "site")
    driver.get((site / "index.html").as_uri())
    heads = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#overview th")]
    rows = {r.find_elements(By.TAG_NAME, "td")[0].text: [td.text for td in r.find_elements(By.TAG_NAME, "td")]
            for r in driver.find_elements(By.CSS_SELECTOR, "#overview tbody tr")}
    col = {h.split(" (")[0]: i for i, h in enumerate(heads)}
    value = rows["ok"][col["quality"]].splitlines()[0]  # the change vs base follows on its own line
    assert value.endswith(" %") and " ± " in value, rows["ok"]
    assert rows["ok"][col["peak RSS"]] == "✗ failed: memory"  # its memory suite run failed
    assert all(c == "✗ failed: prune.wanda" for c in rows["bad"][3:]), rows["bad"]


def _visible_svgs(driver, css: str) -> list[dict]:
    """Bounding boxes of the SVGs matching ``css`` (as the browser laid them out)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(e => {const r = e.getBoundingClientRect();"
        " return {w: r.width, h: r.height, marks: e.querySelectorAll('circle, rect, path').length}; });", css)


def _not_blank(png: bytes) -> int:
    """How many distinct colours a screenshot has (a blank page has one or two)."""
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB").resize((200, 130))
    return len(set(img.getdata()))


def test_analysis_pages_in_chromium(driver, tmp_path):
    """The effects page, the DAG page and a path page with trajectory, parity and break-even: loaded from file://,
    no console error, every chart laid out with a non-zero size and marks, and the screenshots are not blank."""
    from analysis_builders import write_all
    from selenium.webdriver.common.by import By

    db = tmp_path / "results.duckdb"
    write_all(db)
    site = build_site(db, tmp_path / "site")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.get((site / "index.html").as_uri())
    cells = [td.text for td in driver.find_elements(By.CSS_SELECTOR, "#overview tbody td")]
    assert any("Δ -5.0 ± 2.8 pts" in c for c in cells) and any("×1.25 ± " in c for c in cells)
    vs = driver.find_elements(By.CSS_SELECTOR, "#overview .vs-base")
    assert any("vs base path base" in (v.get_attribute("title") or "") for v in vs)
    driver.find_element(By.ID, "effects-link").click()
    assert driver.find_element(By.TAG_NAME, "h1").text == "Effects of grid runs"
    forests = _visible_svgs(driver, "svg.forest")
    assert len(forests) >= 2 and all(f["w"] > 100 and f["h"] > 50 and f["marks"] >= 1 for f in forests), forests
    dot = driver.find_element(By.CSS_SELECTOR, "svg.forest circle.est-dot").rect
    assert dot["width"] > 0 and dot["height"] > 0
    assert _not_blank(driver.get_screenshot_as_png()) > 8
    driver.save_screenshot(str(ARTIFACTS / "leaderboard-effects.png"))
    driver.get((site / "dag.html").as_uri())
    dags = _visible_svgs(driver, "svg.dag")
    assert len(dags) == 2 and all(d["w"] > 300 and d["h"] > 30 for d in dags), dags
    node = driver.find_element(By.CSS_SELECTOR, 'section[data-run="r1"] a.dag-node[data-node="pr"]')
    assert node.rect["width"] > 0 and node.rect["height"] > 0
    assert _not_blank(driver.get_screenshot_as_png()) > 8
    driver.save_screenshot(str(ARTIFACTS / "leaderboard-dag.png"))
    driver.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))",
                          node.find_element(By.CSS_SELECTOR, "rect"))
    assert driver.current_url.endswith("/paths/p-fast.html")
    assert driver.find_element(By.TAG_NAME, "h1").text == "fast"
    sparks = _visible_svgs(driver, ".multiples svg.spark")
    assert all(s["w"] > 100 and s["h"] > 50 and s["marks"] >= 1 for s in sparks), sparks
    assert max(s["marks"] for s in sparks) == 4  # three measured nodes and the line through them
    for table in ("trajectory", "parity", "breakeven"):
        assert driver.find_element(By.CSS_SELECTOR, f"table.{table}").rect["height"] > 20, table
    assert "resolved" in driver.find_element(By.CSS_SELECTOR, "table.breakeven tr.be-time").text
    driver.execute_script("document.getElementById('trajectory').scrollIntoView()")
    assert _not_blank(driver.get_screenshot_as_png()) > 8
    driver.save_screenshot(str(ARTIFACTS / "leaderboard-path-analyses.png"))
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
