"""The built site in real headless Chromium: sort, filter, open a path page and the Pareto view, no console
errors; a screenshot is kept (``$SLM_ARTIFACTS`` or ``.ci-artifacts/``)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "results"))
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


def test_site_in_chromium(driver, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    db = tmp_path / "results.duckdb"
    write_run(db, "r1", {f"path-{i}": {"acc_correct": outcomes(200, 0.5 + 0.05 * i, i), "sparsity": 0.1 * i,
                                       "latency": latencies(30, 0.03 + 0.01 * i, i), "energy": 0.3 + 0.1 * i}
                         for i in range(5)})
    site = build_site(db, tmp_path / "site")
    driver.get((site / "index.html").as_uri())
    rows = driver.find_elements(By.CSS_SELECTOR, "#overview tbody tr")
    assert len(rows) == 5
    header = next(th for th in driver.find_elements(By.CSS_SELECTOR, "#overview th") if th.text.startswith("quality"))
    header.click()
    header.click()  # descending: best quality first
    first = driver.find_element(By.CSS_SELECTOR, "#overview tbody tr td a").text
    assert first == "path-4"
    driver.find_element(By.ID, "f-text").send_keys("path-2")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#overview tbody tr")) == 1
    Select(driver.find_element(By.ID, "f-hw")).select_by_visible_text("cpu-1t")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.find_element(By.ID, "f-text").clear()
    driver.find_element(By.ID, "f-text").send_keys(" ")
    driver.find_element(By.ID, "f-text").clear()
    driver.execute_script("document.getElementById('f-text').dispatchEvent(new Event('input'))")
    driver.save_screenshot(str(ARTIFACTS / "leaderboard.png"))
    driver.find_element(By.LINK_TEXT, "path-3").click()
    assert "path-3" in driver.find_element(By.TAG_NAME, "h1").text
    assert "prune.magnitude" in driver.page_source
    driver.get((site / "pareto.html").as_uri())
    assert len(driver.find_elements(By.CSS_SELECTOR, "svg.pareto")) >= 1
    assert driver.find_elements(By.CSS_SELECTOR, "circle.front")
    driver.get((site / "compare.html").as_uri() + "?a=p-path-0&b=p-path-4")
    assert driver.find_elements(By.CSS_SELECTOR, "#comparison tbody tr")
    driver.get((site / "suites" / "quality.html").as_uri())
    assert len(driver.find_elements(By.CSS_SELECTOR, "#suite-table tbody tr")) == 5
    driver.find_element(By.ID, "f-suite").send_keys("path-3")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#suite-table tbody tr")) == 1
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
