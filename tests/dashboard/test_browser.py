"""The dashboard in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``), driven by Selenium pointed at those binaries: a person's walk
through the pages, a dead job requeued by a click, a re-drive scheduled, the store
checked after. Each page is screenshotted into the artifact directory
($MPQUEUE_TEST_ARTIFACTS, default ``artifacts/dashboard`` in the checkout: not
committed) and must render without console errors.

Without a browser these tests skip, saying how to install one; under CI=true they fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mpqueue import Queue
from mpqueue.records import JobState, now_ms

from ..support.helpers import claim_all, failed, wait_until
from ..support.pg_helpers import pg_url  # noqa: F401
from .helpers import SCRIPT, populate, served

HOW_TO = (
    "the browser tests need Chromium and its driver: apt-get install chromium "
    "chromium-driver (or set MPQUEUE_CHROMIUM and MPQUEUE_CHROMEDRIVER to the binaries), "
    "and the test extra (pip install -e '.[test]', which brings selenium)"
)
ROOT = Path(__file__).resolve().parents[2]


def _missing(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}: {HOW_TO}")
    pytest.skip(f"{why}: {HOW_TO}")


def _binaries() -> tuple[str, str]:
    chromium = os.environ.get("MPQUEUE_CHROMIUM") or shutil.which("chromium")
    driver = os.environ.get("MPQUEUE_CHROMEDRIVER") or shutil.which("chromedriver")
    if not chromium or not driver:
        _missing("no chromium or chromedriver on PATH")
    return str(chromium), str(driver)


@pytest.fixture
def artifacts() -> Path:
    where = Path(os.environ.get("MPQUEUE_TEST_ARTIFACTS", ROOT / "artifacts" / "dashboard"))
    where.mkdir(parents=True, exist_ok=True)
    return where


@pytest.fixture
def browser() -> Iterator[object]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed")
    chromium, driver_path = _binaries()
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium fetch a browser
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(params=["lmdb", "postgres"])
def location(request, tmp_path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(tmp_path / "store")


def element(driver, element_id: str):  # type: ignore[no-untyped-def]
    """The element with that id, once the page that has it has loaded."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 20).until(
        expected_conditions.presence_of_element_located((By.ID, element_id))
    )


def message(driver) -> str:
    """The message a page shows after a change (the page the POST's redirect loads)."""
    return str(element(driver, "message").text)


def shown(driver, artifacts: Path, name: str, backend: str) -> None:
    """Screenshot the page, and check it logged no console error."""
    driver.save_screenshot(str(artifacts / f"{backend}-{name}.png"))
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], (name, errors)


@pytest.mark.timeout(240)
def test_a_person_walks_the_pages_requeues_and_re_drives(browser, artifacts, location):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    backend = "postgres" if location.startswith("postgres") else "lmdb"
    with Queue(location) as queue:
        jobs = populate(queue)
        noop = queue.task_by_name("tests.support.tasks.noop")
        later = noop.delay("later").id
        claim_all(queue.store)
        failed(queue.store, later, "boom", retryable=False)
    driver = browser
    with served(location) as url:
        driver.get(url + "/")
        assert element(driver, "counts").text.startswith("waiting")
        shown(driver, artifacts, "overview", backend)

        driver.find_element(By.LINK_TEXT, "Jobs").click()
        element(driver, "filters")
        Select(driver.find_element(By.NAME, "state")).select_by_value("dead")
        driver.find_element(By.CSS_SELECTOR, "#filters button").click()
        wait_until(lambda: "state=dead" in driver.current_url, timeout=20, what="the filtered page")
        element(driver, "jobs")
        shown(driver, artifacts, "jobs", backend)

        driver.find_element(By.LINK_TEXT, jobs["dead"]).click()
        arguments = element(driver, "arguments").text
        assert SCRIPT in arguments  # shown as text: the tag never became an element
        assert driver.find_elements(By.CSS_SELECTOR, "main script") == []
        shown(driver, artifacts, "job", backend)
        driver.find_element(By.CSS_SELECTOR, "#requeue button").click()
        assert "requeued 1 job now" in message(driver)
        shown(driver, artifacts, "job-requeued", backend)

        driver.find_element(By.LINK_TEXT, "Dead letters").click()
        element(driver, "selection")
        driver.find_element(By.CSS_SELECTOR, f'input[name=ids][value="{later}"]').click()
        selection = driver.find_element(By.ID, "selection")
        selection.find_element(By.CSS_SELECTOR, 'input[name=when][value="in"]').click()
        minutes = selection.find_element(By.NAME, "minutes")
        minutes.clear()
        minutes.send_keys("30")
        shown(driver, artifacts, "dead", backend)
        before = now_ms()
        driver.find_element(By.ID, "requeue-selected").click()
        assert "to run at" in message(driver)

        for page, name in (("Servers", "servers"), ("Periodic", "periodic")):
            driver.find_element(By.LINK_TEXT, page).click()
            element(driver, name if name == "servers" else "schedules")
            shown(driver, artifacts, name, backend)

        # the overview's live part is fetched again by its poll, without errors
        driver.get(url + "/")
        element(driver, "counts")
        marker = "document.getElementById('counts').setAttribute('data-old', '1')"
        driver.execute_script(marker)
        wait_until(
            lambda: driver.execute_script(
                "return !document.getElementById('counts').hasAttribute('data-old')"
            ),
            timeout=20,
            what="the overview refreshed itself",
            interval=0.2,
        )
        shown(driver, artifacts, "overview-refreshed", backend)

    with Queue(location) as queue:
        assert queue.store.get(jobs["dead"]).state is JobState.READY
        redriven = queue.store.get(later)
        assert redriven.state is JobState.SCHEDULED
        assert before + 30 * 60_000 <= redriven.run_at_ms <= now_ms() + 30 * 60_000
