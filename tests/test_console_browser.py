"""The web console in a real headless Chromium (Debian's chromium and chromium-driver, which
.ci/run installs), against the local runtime on moto: a click-through from the overview to a
failed flow step, its re-drive, and its flow; the live figures moving as tasks run; the task
list's bulk re-drive behind a confirmation that says how many. The screenshots in the
documentation are taken here (docs/assets/screenshots/)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.operate_support import enqueue, running_dev
from tq_cloud import EntityRef, ExecutorActions, FlowConfig, JoinTarget, Task, TaskQueuesManager

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "docs" / "assets" / "screenshots"


class Checkout:
    """An order fans out into a charge per item and joins into a receipt; charges of 'card-*'
    items fail for good while `broken` (a bug, fixed later)."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()
        self.broken = True
        self.app = app = TaskQueuesManager()

        @app.task("shop", "order")
        async def order(task: Task, actions: ExecutorActions) -> None:
            steps = [{"type": "charge", "queue_id": "billing", "payload": {"item": item},
                      "entity": {"type": "customer", "id": task.payload["customer"]}} for item in task.payload["items"]]
            actions.start_flow(steps, FlowConfig(join=JoinTarget(type="receipt", queue_id="shop"),
                                                 entity=EntityRef(type="customer", id=task.payload["customer"])))
            actions.success(task)

        @app.task("billing", "charge", retries=0, store_on_failure=True)
        async def charge(task: Task, actions: ExecutorActions) -> None:
            self.runs[task.key] += 1
            if self.broken and task.payload["item"].startswith("card-"):
                actions.fail(task, f"card declined for {task.payload['item']}")
            else:
                actions.success(task, {"charged": task.payload["item"]})

        @app.task("shop", "receipt")
        async def receipt(task: Task, actions: ExecutorActions) -> None:
            actions.success(task, {"paid": task.payload["flow_results"]["counts"]["succeeded"]})

        @app.task("mail", "notify")
        async def notify(task: Task, actions: ExecutorActions) -> None:
            actions.success(task)


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
                 "--window-size=1280,1100", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    browser.set_page_load_timeout(30)
    yield browser
    browser.quit()


def test_click_through_overview_failed_step_redrive_and_its_flow(moto_endpoint: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    shop = Checkout()
    seed = [Task(id="order-7", type="order", queue_id="shop", payload={"customer": "c42", "items": ["card-7", "gift-1"]}),
            *(Task(id=f"note-{i}", type="notify", queue_id="mail", payload={}) for i in range(3))]
    with running_dev(moto_endpoint, shop.app, seed, console=True) as (runtime, settings):
        wait = WebDriverWait(browser, 60, poll_frequency=0.2)
        browser.get(runtime.console_url)
        assert browser.title == "tq-cloud console"
        failed = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#failed tr[data-id] a") or b.refresh())
        wait.until(lambda b: int(b.find_element(By.ID, "executed").text or 0) >= 4)  # live, from the kept counters
        executed = int(browser.find_element(By.ID, "executed").text)
        browser.find_element(By.CSS_SELECTOR, "img.chart")  # the charts are there (their SVG is tested elsewhere)
        assert browser.save_screenshot(str(SCREENSHOTS / "console-overview.png"))
        enqueue(settings, [Task(id=f"more-{i}", type="notify", queue_id="mail", payload={}) for i in range(5)])
        wait.until(lambda b: int(b.find_element(By.ID, "executed").text) >= executed + 5)  # moved without a reload

        failed = browser.find_elements(By.CSS_SELECTOR, "#failed tr[data-id] a")
        failed[0].click()  # overview -> the failed step
        wait.until(seen.text_to_be_present_in_element((By.ID, "task-status"), "failed"))
        assert "card declined for card-7" in browser.find_element(By.ID, "task-error").text
        assert browser.find_elements(By.CSS_SELECTOR, "#timeline li.fail"), "its failed attempt on the timeline"
        assert browser.save_screenshot(str(SCREENSHOTS / "console-task.png"))
        step_id = browser.current_url.rsplit("/", 1)[1]

        shop.broken = False
        browser.find_element(By.ID, "redrive").click()  # -> re-drive
        wait.until(seen.text_to_be_present_in_element((By.ID, "result"), f"re-driven: {step_id}"))
        wait.until(lambda b: b.refresh() or "executed" in b.find_element(By.ID, "task-status").text)
        assert "re-driven (1)" in browser.find_element(By.ID, "timeline").text

        browser.find_element(By.ID, "flow-link").click()  # -> its flow
        wait.until(lambda b: b.refresh() or "dispatched" in b.find_element(By.ID, "join").text)
        wait.until(lambda b: b.refresh() or "executed" in b.find_element(By.ID, "join").text)
        bar = browser.find_element(By.CSS_SELECTOR, "[role=progressbar]")
        assert bar.get_attribute("aria-valuenow") == bar.get_attribute("aria-valuemax") == "2"
        assert browser.save_screenshot(str(SCREENSHOTS / "console-flow.png"))

        browser.get(runtime.console_url + "/entities/customer/c42")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#entity-timeline li")) >= 2
        assert browser.save_screenshot(str(SCREENSHOTS / "console-entity.png"))
        assert "https://" not in browser.page_source.split("<body>")[0], "nothing loaded from the internet"
    assert shop.runs[step_id] == 2


def test_bulk_redrive_asks_first_and_says_how_many(moto_endpoint: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    shop = Checkout()
    seed = [Task(id=f"order-{i}", type="order", queue_id="shop", payload={"customer": f"c{i}", "items": [f"card-{i}"]})
            for i in range(3)]
    with running_dev(moto_endpoint, shop.app, seed, console=True) as (runtime, _):
        wait = WebDriverWait(browser, 60, poll_frequency=0.2)
        browser.get(runtime.console_url + "/tasks?status=failed&queue=billing")
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#tasks tr[data-id]")) == 3 or b.refresh())
        assert browser.save_screenshot(str(SCREENSHOTS / "console-tasks.png"))
        shop.broken = False
        browser.find_element(By.ID, "redrive-matching").click()
        dialog = wait.until(seen.visibility_of_element_located((By.ID, "confirm")))
        assert "Re-drive 3 failed tasks" in dialog.text, dialog.text
        dialog.find_element(By.CSS_SELECTOR, "button.primary").click()
        wait.until(seen.text_to_be_present_in_element((By.ID, "result"), "re-driven:"))
        wait.until(lambda b: b.refresh() or not b.find_elements(By.CSS_SELECTOR, "#tasks tr[data-id]"))
    assert sorted(shop.runs.values()) == [2, 2, 2]
