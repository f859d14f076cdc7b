"""The web console in a real headless Chromium (Debian's chromium and chromium-driver, which
.ci/run installs), against the local runtime: the page loads, lists the failed task with its
error, the re-drive button sends it back (and the task's detail records it), and the live
counter moves as tasks run. The screenshots in the documentation are taken here
(docs/assets/screenshots/: a failure listed, then a task's detail after its re-drive)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.operate_support import Shop, enqueue, running_dev
from tq_cloud import Task

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "docs" / "assets" / "screenshots"


@pytest.fixture
def browser(tmp_path: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1400", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    browser.set_page_load_timeout(30)
    yield browser
    browser.quit()


def test_the_console_lists_failures_redrives_them_and_counts_live(moto_endpoint: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    shop = Shop()
    seed = [Task(id="order-7", type="charge", queue_id="billing", payload={"amount": 7}),
            *(Task(id=f"note-{i}", type="notify", queue_id="mail", payload={}) for i in range(3))]
    with running_dev(moto_endpoint, shop.app, seed, console=True) as (runtime, settings):
        wait = WebDriverWait(browser, 60, poll_frequency=0.2)
        browser.get(runtime.console_url)
        assert browser.title == "tq-cloud console"
        row = wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, '#failed tr[data-id="order-7"]')))
        assert "card declined for order-7" in row.text
        wait.until(lambda b: int(b.find_element(By.ID, "total").text or 0) >= 4)
        before = int(browser.find_element(By.ID, "total").text)
        assert browser.save_screenshot(str(SCREENSHOTS / "console-failure.png"))

        shop.broken = False
        row.find_element(By.CSS_SELECTOR, "button.redrive").click()
        wait.until(seen.text_to_be_present_in_element((By.ID, "redrive-result"), "re-driven: order-7"))
        wait.until(seen.text_to_be_present_in_element((By.ID, "detail"), '"redrives": 1'))
        wait.until(lambda b: not b.find_elements(By.CSS_SELECTOR, '#failed tr[data-id="order-7"]'))
        enqueue(settings, [Task(id=f"more-{i}", type="notify", queue_id="mail", payload={}) for i in range(5)])
        wait.until(lambda b: int(b.find_element(By.ID, "total").text) >= before + 5)  # the live counter moved

        browser.find_element(By.ID, "task-id").send_keys("order-7")
        browser.find_element(By.CSS_SELECTOR, "#task-form button").click()
        wait.until(seen.text_to_be_present_in_element((By.ID, "detail"), '"status": "executed"'))
        wait.until(seen.text_to_be_present_in_element((By.ID, "task-result"), '"charged":7'))
        assert not browser.find_element(By.ID, "cancel-task").is_displayed(), "a finished task offers a cancel"

        later = datetime.now(UTC) + timedelta(hours=1)
        enqueue(settings, [Task(id="later-1", type="notify", queue_id="mail", payload={}, execute_at=later)])
        browser.find_element(By.ID, "task-id").clear()
        browser.find_element(By.ID, "task-id").send_keys("later-1")
        browser.find_element(By.CSS_SELECTOR, "#task-form button").click()
        wait.until(seen.text_to_be_present_in_element((By.ID, "task-status"), "scheduled"))
        browser.find_element(By.ID, "cancel-task").click()
        wait.until(seen.text_to_be_present_in_element((By.ID, "cancel-result"), "cancelled"))
        wait.until(seen.text_to_be_present_in_element((By.ID, "task-status"), "cancelled"))
        assert browser.save_screenshot(str(SCREENSHOTS / "console-task.png"))
        assert "https://" not in browser.page_source.split("<body>")[0], "nothing loaded from the internet"
    assert shop.runs["order-7"] == 2 and "later-1" not in shop.runs
