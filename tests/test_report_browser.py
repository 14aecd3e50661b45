"""The results page in a real browser (issue 13): Debian's Chromium, driven headless by Playwright. The report of a
real run over the ImageNet photos opens from disk with no console error, every preview decodes, each class section
shows exactly the photos copied into its folder, and the counts equal the job's status; the same page served live
by `imgclassify serve` while a job runs. Screenshots are written next to the test's files and their paths printed."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from imgclassify.emulation import free_port, wait_for_http
from tests.conftest import MOBILENET_TFLITE

pytestmark = pytest.mark.slow
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
# They keep a headless Chromium from reaching for Google's servers, which this network refuses.
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic")
IMGCLASSIFY = str(Path(sys.executable).with_name("imgclassify"))
MODEL = ("--model", "mobilenet_v2", "--weights", str(MOBILENET_TFLITE))
CLASSES = ["dogs", "birds", "food", "musical instruments"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: .ci/run installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def sorted_folder(tmp_path_factory, shared) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("report")
    shutil.copytree(shared / "photos/imagenet-dev", root / "all")
    (root / "all/broken.jpg").write_bytes(b"not a photo")
    run = subprocess.run([IMGCLASSIFY, "run", str(root), "--classes", *CLASSES, *MODEL, "--json"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return root, json.loads(run.stdout)


@contextlib.contextmanager
def serving(root: Path, key: str = "", *extra: str) -> Iterator[str]:
    """`imgclassify serve root` (one worker, SERVICE_KEY=key when given) on a free loopback port: its base URL,
    until Ctrl-C stops it."""
    port = free_port()
    server = subprocess.Popen([IMGCLASSIFY, "serve", str(root), "--port", str(port), *MODEL, "--workers", "1", *extra],
                              env={**os.environ, **({"SERVICE_KEY": key} if key else {})},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/classification-job/{'0' * 32}", 120, server)
        yield base
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.wait_for_load_state("load")
    return page, errors


def reveal_everything(page) -> None:
    """Open every 'show more' page (a served page fetches each: wait for it) and load every preview (lazy)."""
    while page.locator("button.more").count():
        page.locator("button.more").first.click()
        page.wait_for_function("!document.querySelector('button.more[disabled]')", timeout=60_000)
    page.evaluate("document.querySelectorAll('img').forEach(img => img.loading = 'eager')")
    page.wait_for_function("[...document.images].every(img => img.complete)", timeout=60_000)


def searched(page) -> None:
    """A served page's search asks the server (after a pause in typing): wait for its answers."""
    page.wait_for_function("document.querySelector('form.filters').dataset.busy === '0'", timeout=30_000)


def files_in(page, selector: str) -> list[str]:
    return page.eval_on_selector_all(f"{selector} figure", "els => els.map(e => e.dataset.file)")


def test_the_report_of_a_real_run_shows_every_copy_under_its_class_and_counts_match(browser, sorted_folder,
                                                                                   tmp_path):
    root, status = sorted_folder
    out = tmp_path / "report.html"
    written = subprocess.run([IMGCLASSIFY, "report", str(root), "--out", str(out)], capture_output=True, text=True,
                             timeout=300)
    assert written.returncode == 0, written.stderr

    page, errors = open_page(browser, out.as_uri())
    reveal_everything(page)
    widths = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
    screenshot = tmp_path / "report.png"
    page.screenshot(path=str(screenshot))
    print(f"screenshot: {screenshot}")

    assert errors == []
    assert len(widths) == status["number_of_files"] - status["failed"] and all(w > 0 for w in widths)
    for class_name in CLASSES:
        shown = files_in(page, f'section[data-class="{class_name}"]')
        on_disk = sorted(p.relative_to(root / class_name).as_posix() for p in (root / class_name).rglob("*")
                         if p.is_file()) if (root / class_name).exists() else []
        assert sorted(shown) == on_disk and len(shown) == status["matches"][class_name]
    assert len(files_in(page, 'section[data-section="unmatched"]')) == status["unmatched"]
    assert files_in(page, 'section[data-section="failed"]') == ["broken.jpg"]
    assert "not a recognised image format" in page.inner_text('section[data-section="failed"]')
    assert out.stat().st_size < 5 * 1024 * 1024
    # Each preview opens its full photo: a link relative to the page, to the photo itself.
    links = page.eval_on_selector_all("figure a.full", "els => els.map(e => [e.closest('figure').dataset.file, "
                                                       "e.getAttribute('href')])")
    assert len(links) == status["number_of_files"]
    from urllib.request import url2pathname

    assert all((out.parent / url2pathname(href)).resolve() == (root / "all" / file).resolve() for file, href in links)
    # Filters work on a file too (no server): a label search finds the photos whose top labels say it.
    page.locator("input[name=q]").fill("macaw")
    page.locator("input[name=q]").dispatch_event("input")
    found = page.eval_on_selector_all("figure:not([hidden])", "els => els.map(e => e.dataset.labels)")
    assert found and all("macaw" in labels for labels in found)


def test_the_page_served_live_while_a_job_runs_and_its_exports(browser, tmp_path, shared):
    root = tmp_path / "served"
    shutil.copytree(shared / "photos/imagenet-dev", root / "all")
    with serving(root) as base:
        job = requests.post(f"{base}/classification-job", json={"classes": ["dogs", "birds"]}, timeout=30).json()
        page, errors = open_page(browser, f"{base}/classification-job/{job['id']}/report")
        running = page.locator("body[data-refresh]").count()
        # Closed before the job ends: its own refresh would otherwise race the next navigation (ERR_ABORTED).
        page.close()
        deadline = time.monotonic() + 120
        while not requests.get(f"{base}/classification-job/{job['id']}", timeout=10).json()["complete"]:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        page, finished_errors = open_page(browser, f"{base}/classification-job/{job['id']}/report")
        reveal_everything(page)
        status = requests.get(f"{base}/classification-job/{job['id']}", timeout=10).json()
        widths = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
        screenshot = tmp_path / "served.png"
        page.screenshot(path=str(screenshot))
        print(f"screenshot: {screenshot}")
        index, index_errors = open_page(browser, base + "/")
        csv_export = requests.get(f"{base}/classification-job/{job['id']}/report?format=csv", timeout=30)
        jsonl = requests.get(f"{base}/classification-job/{job['id']}/report?format=jsonl", timeout=30)

    assert running == 1 and page.locator("body[data-refresh]").count() == 0  # refreshes only while running
    assert errors == [] and finished_errors == [] and index_errors == []
    assert len(widths) == status["processed"] and all(w > 0 for w in widths)
    assert len(files_in(page, 'section[data-class="dogs"]')) == status["matches"]["dogs"]
    assert index.locator(f'a[href="/classification-job/{job["id"]}/report"]').count() == 1
    assert csv_export.headers["Content-Type"].startswith("text/csv") and len(csv_export.text.splitlines()) == 310
    rows = [json.loads(line) for line in jsonl.text.splitlines()]
    assert len(rows) == 309 and sum("dogs" in r["matched"] for r in rows) == status["matches"]["dogs"]


def test_photos_are_corrected_on_the_served_page_with_the_keyboard_and_the_folder_follows(browser, tmp_path,
                                                                                          shared):
    """Issue 20: "not <class>" removes the job's copy at once; "add to class" (typed, Enter) makes one; both are
    kept as the folder's corrections (`imgclassify examples`), behind the service key like the rest."""
    root = tmp_path / "corrected"
    shutil.copytree(shared / "photos/coral", root / "all", ignore=shutil.ignore_patterns("COPYRIGHT*", "*.txt"))
    key = "browser-key"
    headers = {"Authorization": f"Bearer {key}"}
    with serving(root, key) as base:
        job = requests.post(f"{base}/classification-job", json={"classes": ["dogs", "birds"]}, headers=headers,
                            timeout=30).json()
        deadline = time.monotonic() + 120
        while not requests.get(f"{base}/classification-job/{job['id']}", headers=headers,
                               timeout=10).json()["complete"]:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        context = browser.new_context(http_credentials={"username": "imgclassify", "password": key})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{base}/classification-job/{job['id']}/report")
        dog = page.locator('section[data-class="dogs"] figure').first
        dog_file = dog.get_attribute("data-file")
        assert (root / "dogs" / dog_file).exists()
        dog.locator("button.not").focus()
        page.keyboard.press("Enter")
        page.wait_for_function("document.querySelector('figure[data-corrected=\"-dogs\"]')", timeout=30_000)
        other = page.locator('section[data-section="unmatched"] figure').first
        other_file = other.get_attribute("data-file")
        other.locator("input[name=class]").focus()
        page.keyboard.type("favourites")
        page.keyboard.press("Enter")
        page.wait_for_function("document.querySelector('figure[data-corrected=\"+favourites\"]')", timeout=30_000)
        said = [dog.locator("output").inner_text(), other.locator("output").inner_text()]
        context.close()

    assert errors == [] and said == ["marked not dogs", "added to favourites"]
    assert not (root / "dogs" / dog_file).exists() and (root / "favourites" / other_file).is_file()
    kept = subprocess.run([IMGCLASSIFY, "examples", str(root), "--json"], capture_output=True, text=True, timeout=60)
    rows = {(r["class"], r["belongs"], r["photo"]) for r in json.loads(kept.stdout)}
    assert rows == {("dogs", False, f"all/{dog_file}"), ("favourites", True, f"all/{other_file}")}


def test_the_served_front_page_starts_a_job_lists_it_live_and_undoes_it_with_the_keyboard(browser, tmp_path,
                                                                                         shared):
    """Issue 23: a form on the front page (classes suggested as they are typed, added with Enter, a dry run or
    not), the jobs list following the job without a reload, undo from the list; and the results page's search,
    section and score filters and its link to the full photo."""
    root = tmp_path / "front"
    shutil.copytree(shared / "photos/coral", root / "all", ignore=shutil.ignore_patterns("COPYRIGHT*", "*.txt"))
    with serving(root) as base:
        watcher, watcher_errors = open_page(browser, base + "/")  # the list, left open: it must follow the job
        watcher.evaluate("window.notReloaded = true")
        page, errors = open_page(browser, base + "/")
        page.on("dialog", lambda dialog: dialog.accept())
        page.keyboard.press("Tab")  # the first control is the class field
        assert page.evaluate("document.activeElement.id") == "class-input"
        page.keyboard.type("do")
        suggested = page.eval_on_selector_all("#vocabulary option", "els => els.map(e => e.value)")
        page.keyboard.type("gs")
        page.keyboard.press("Enter")
        page.keyboard.type("birds")
        page.keyboard.press("Enter")
        chips = page.eval_on_selector_all("#chosen .chip", "els => els.map(e => e.dataset.chosen)")
        page.locator("input[name=dry_run]").focus()
        page.keyboard.press("Space")  # not a dry run: copies are made, so there is something to undo
        page.keyboard.press("Enter")  # submits the form
        page.wait_for_url("**/classification-job/*/report", timeout=30_000)
        job_id = page.url.rsplit("/", 2)[1]
        deadline = time.monotonic() + 120
        while not requests.get(f"{base}/classification-job/{job_id}", timeout=10).json()["complete"]:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        status = requests.get(f"{base}/classification-job/{job_id}", timeout=10).json()
        watcher.wait_for_function(f"document.querySelector('tr[data-job=\"{job_id}\"][data-state=\"complete\"]')"
                                  " && window.notReloaded", timeout=30_000)
        page.goto(page.url)
        results = page.eval_on_selector_all("figure", "els => els.map(e => [e.closest('section').dataset.class "
                                                      "|| e.closest('section').dataset.section, e.dataset.file, "
                                                      "e.dataset.score === undefined ? null : +e.dataset.score])")
        dog = next(file for section, file, _ in results if section == "dogs")
        page.locator("input[name=q]").focus()
        page.keyboard.type(dog.rsplit("/", 1)[-1])
        searched(page)
        found = page.eval_on_selector_all("figure:not([hidden])", "els => els.map(e => e.dataset.file)")
        page.locator("input[name=q]").fill("")
        page.select_option("select[name=section]", "class:birds")
        sections = page.eval_on_selector_all("section:not([hidden])", "els => els.map(e => e.dataset.class)")
        page.select_option("select[name=section]", "")
        page.locator("input[name=score]").fill("0.9")
        page.locator("input[name=score]").dispatch_event("input")
        searched(page)
        high = page.eval_on_selector_all("figure:not([hidden])", "els => els.map(e => e.dataset.file)")
        said = page.inner_text("form.filters output.shown")
        full = requests.get(base + page.locator(f'figure[data-file="{dog}"] a.full').first.get_attribute("href"),
                            timeout=30)
        index, index_errors = open_page(browser, base + "/")
        index.on("dialog", lambda dialog: dialog.accept())
        listed = index.locator(f'tr[data-job="{job_id}"]').get_attribute("data-state")
        index.locator(f'button[data-undo="{job_id}"]').focus()
        index.keyboard.press("Enter")
        index.wait_for_function(f"document.querySelector('tr[data-job=\"{job_id}\"] output').textContent"
                                ".startsWith('removed')", timeout=30_000)
        undone = index.inner_text(f'tr[data-job="{job_id}"] output')
        refused, _ = open_page(browser, base + "/")
        refused.locator("#class-input").fill("glorps")
        refused.keyboard.press("Enter")
        refused.locator("button[type=submit]").click()
        refused.wait_for_function("document.getElementById('start-said').textContent.includes('glorps')",
                                  timeout=30_000)
        refusal = refused.inner_text("#start-said")

    assert errors == [] and index_errors == [] and watcher_errors == []
    assert "dog" in suggested and len(suggested) <= 12 and chips == ["dogs", "birds"]
    assert status["classes"] == ["dogs", "birds"] and "dry_run" not in status and status["matches"]["dogs"] > 0
    assert found == [dog] and sections == ["birds"]
    expected_high = sorted(file for _, file, score in results if score is not None and score >= 0.9)
    assert sorted(high) == expected_high and said.startswith(f"{len(expected_high)} of ")
    assert full.status_code == 200 and full.headers["Content-Type"] == "image/jpeg"
    assert listed == "complete" and undone == f"removed {sum(status['matches'].values())} copies"
    assert not (root / "dogs").exists() and not (root / "birds").exists()
    assert "not a WordNet noun" in refusal


def test_the_front_page_suggests_the_served_taught_classes_and_the_detectors_and_shows_errors_as_errors(
        browser, tmp_path, shared):
    """Issue 30: `serve --examples receipts=FOLDER` offers `receipts` as it is typed, before any job used it; the
    detector's classes are offered too; a refused request reads as an error, not in the colour of success."""
    root, examples = tmp_path / "front", tmp_path / "receipts"
    shutil.copytree(shared / "photos/coral", root / "all", ignore=shutil.ignore_patterns("COPYRIGHT*", "*.txt"))
    examples.mkdir()
    for photo in sorted((shared / "photos/coral").glob("*.jpg"))[:2]:
        shutil.copy(photo, examples / photo.name)
    with serving(root, "", "--examples", f"receipts={examples}") as base:
        page, errors = open_page(browser, base + "/")
        suggested = {}
        for typed in ("rece", "peop", "hors", "giraf"):
            page.locator("#class-input").fill("")
            page.locator("#class-input").focus()
            page.keyboard.type(typed)
            suggested[typed] = page.eval_on_selector_all("#vocabulary option", "els => els.map(e => e.value)")
        page.locator("#class-input").fill("")
        said = page.locator("#start-said")
        success = said.evaluate("e => getComputedStyle(e).color")  # an <output> as it shows progress and success
        page.keyboard.type("glorps")
        page.keyboard.press("Enter")
        page.locator("button[type=submit]").click()
        page.wait_for_function("document.getElementById('start-said').textContent.includes('glorps')",
                               timeout=30_000)
        refusal = said.evaluate("e => [e.className, getComputedStyle(e).color, e.textContent]")
    assert [error for error in errors if "status of 400" not in error] == []  # the refusal's own 400 aside
    assert suggested["rece"][0] == "receipts" and "people" in suggested["peop"]
    assert "horse" in suggested["hors"] and "giraffe" in suggested["giraf"]
    red, green = (int(n) for n in refusal[1][4:-1].split(",")[:2])
    assert refusal[0] == "error" and refusal[1] != success and red > 2 * green and "glorps" in refusal[2]
