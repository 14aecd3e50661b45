"""Another site in the user's browser cannot act for the user (issue 28), in Debian's Chromium driven by Playwright:
`imgclassify serve` on one loopback port, an attacker's pages on another origin (`localhost` against `127.0.0.1`:
another site; another port: the same site, another origin). A no-cors text/plain POST, id prefixes tried, a
preflighted JSON POST, auto-submitted forms (urlencoded and text/plain carrying JSON) with and without the key's
Basic credentials cached, and a page whose name was rebound to the server: no job is created or undone, checked
from the test process. The server's own page, in the same browser, still works. The same for emulate's gateway
(with a key), run in-process in front of the functions' routes over the in-memory fakes."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from imgclassify.emulation import LOOPBACK, free_port
from tests.test_report_browser import CHROMIUM, CHROMIUM_ARGS, serving

pytestmark = pytest.mark.slow
KEY = "browser-key"
REBOUND = "rebind.test"  # the attacker's name, resolved by this browser to 127.0.0.1 (as a rebinding DNS would)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: .ci/run installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # As test_report_browser's, plus the rebinding: rebind.test resolves to this machine; and without Chromium's
        # own Private Network Access block (a page from elsewhere reaching loopback), which other browsers lack: the
        # server must refuse what such a browser lets through.
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            *CHROMIUM_ARGS, f"--host-resolver-rules=MAP {REBOUND} {LOOPBACK}",
            "--disable-features=BlockInsecurePrivateNetworkRequests,PrivateNetworkAccessRespectPreflightResults,"
            "LocalNetworkAccessChecks"])
        yield launched
        launched.close()


# --- the attacker's site ---------------------------------------------------------------------------------------
FETCHES = """
window.attempts = (async () => {
  const log = [];
  async function attempt(name, url, init) {
    try {
      const r = await fetch(url, Object.assign({credentials: 'include'}, init));
      log.push([name, r.type, r.status]);
    } catch (e) { log.push([name, 'error', String(e)]); }
  }
  const body = JSON.stringify({classes: ['dogs', 'birds']});
  await attempt('no-cors text/plain create', TARGET + '/classification-job',
                {method: 'POST', mode: 'no-cors', headers: {'Content-Type': 'text/plain'}, body: body});
  for (const prefix of PREFIXES)
    await attempt('undo ' + prefix, TARGET + '/classification-job/' + prefix + '/undo',
                  {method: 'POST', mode: 'no-cors', headers: {'Content-Type': 'text/plain'}, body: '{}'});
  await attempt('preflighted JSON create', TARGET + '/classification-job',
                {method: 'POST', headers: {'Content-Type': 'application/json'}, body: body});
  await attempt('read the front page', TARGET + '/', {});
  return log;
})();
"""
FORM = """<form method="POST" action="{action}" enctype="{enctype}"><input name='{name}' value='{value}'></form>
<script>document.forms[0].submit()</script>"""


def prefixes(job_id: str) -> list[str]:
    """What the attacker tries: the job's own prefixes (the worst case: it guessed right) and others."""
    return sorted({job_id[:4], job_id[:6], job_id, "0000", "abcd", "ffff"})


def attempts(job_id: str) -> int:
    """How many lines one attacker origin gives: the fetches (create, each prefix, preflighted, read) and 2 forms."""
    return 1 + len(prefixes(job_id)) + 2 + 2


def attacker_pages(target: str, job_id: str) -> dict[str, str]:
    script = FETCHES.replace("TARGET", json.dumps(target)).replace("PREFIXES", json.dumps(prefixes(job_id)))
    return {
        "/fetches": f"<!doctype html><title>cute cats</title><script>{script}</script>",
        "/form-undo": FORM.format(action=f"{target}/classification-job/{job_id}/undo",
                                  enctype="application/x-www-form-urlencoded", name="x", value="1"),
        # The classic JSON CSRF: a text/plain form whose body reads as JSON.
        "/form-create": FORM.format(action=f"{target}/classification-job", enctype="text/plain",
                                    name='{"classes": ["dogs"], "x": "', value='"}'),
    }


@contextlib.contextmanager
def attacker_site(pages: dict[str, str]) -> Iterator[int]:
    """The attacker's pages on a loopback port of their own: its port."""

    class Pages(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            body = pages.get(self.path, "not here").encode()
            self.send_response(200 if self.path in pages else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((LOOPBACK, free_port()), Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


def attack(context, target: str, job_id: str, attacker_origins: list[str]) -> list[str]:  # type: ignore[no-untyped-def]
    """Every attack from each attacker origin, then the rebound name: what the browser saw, one line each."""
    seen: list[str] = []
    page = context.new_page()
    for origin in attacker_origins:
        page.goto(f"{origin}/fetches")
        seen += [f"{origin} {name}: {kind} {status}" for name, kind, status in page.evaluate("window.attempts")]
        for form in ("/form-undo", "/form-create"):
            page.goto(f"{origin}{form}")
            page.wait_for_url(f"{target}/**", timeout=30_000)
            page.wait_for_load_state("load")
            seen.append(f"{origin} {form}: {page.inner_text('body')[:200]}")
    seen += rebound(page, target)
    page.close()
    return seen


def rebound(page, target: str) -> list[str]:  # type: ignore[no-untyped-def]
    """A page served by the attacker as rebind.test:PORT, whose name then resolves to this machine: to the browser
    its requests are same-origin, JSON included. Only the Host tells."""
    port = target.rsplit(":", 1)[1]
    origin = f"http://{REBOUND}:{port}"
    page.route(f"{origin}/attack", lambda route: route.fulfill(
        status=200, content_type="text/html", body="<!doctype html><title>rebound</title>"))
    page.goto(f"{origin}/attack")
    answers = page.evaluate("""async () => {
      const post = await fetch('/classification-job', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                                      body: JSON.stringify({classes: ['dogs']})});
      const front = await fetch('/');
      return [[post.status, await post.text()], [front.status, await front.text()]];
    }""")
    return [f"{origin} {status}: {text[:200]}" for status, text in answers]


def refused(seen: list[str]) -> list[str]:
    """The lines that do not show a refusal: a no-cors answer is opaque (status 0), a preflight never granted is a
    TypeError, everything else must be our 403/415/421 JSON."""
    ok = ("opaque 0", "error TypeError", '"code": 403', '"code": 415', '"code": 421', "421:")
    return [line for line in seen if not any(mark in line for mark in ok)]


# --- imgclassify serve -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def photos(tmp_path_factory, shared) -> Path:
    root = tmp_path_factory.mktemp("attacked")
    (root / "all").mkdir()
    for name in ("parrot.jpg", "imprinting_dog_test_0.bmp", "cat.bmp"):
        shutil.copy(shared / "photos/coral" / name, root / "all" / name)
    return root


def sorted_job(base: str, headers: dict[str, str]) -> str:
    """A job that made copies (what an attacker would undo), started as the old client would: its id."""
    job = requests.post(f"{base}/classification-job", json={"classes": ["dogs", "birds"]}, headers=headers,
                        timeout=30).json()
    deadline = time.monotonic() + 120
    while not (status := requests.get(f"{base}/classification-job/{job['id']}", headers=headers,
                                      timeout=10).json())["complete"]:
        assert time.monotonic() < deadline, status
        time.sleep(0.3)
    assert sum(status["matches"].values()) >= 1, status
    return job["id"]


def jobs_listed(base: str, headers: dict[str, str]) -> list[str]:
    front = requests.get(f"{base}/", headers=headers, timeout=30).text
    return sorted(part.split('"', 1)[0] for part in front.split('data-job="')[1:])


@pytest.mark.parametrize("keyed", [False, True], ids=["no key", "key cached by the browser"])
def test_another_site_cannot_create_or_undo_a_job_on_serve(browser, photos, tmp_path, keyed):
    root = tmp_path / "folder"
    shutil.copytree(photos, root)
    headers = {"Authorization": f"Bearer {KEY}"} if keyed else {}
    with serving(root, KEY if keyed else "") as base:
        job_id = sorted_job(base, headers)
        copies = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()
                        and not p.relative_to(root).as_posix().startswith((".imgclassify", "all/")))
        before = jobs_listed(base, headers)
        credentials = {"http_credentials": {"username": "me", "password": KEY, "origin": base}} if keyed else {}
        context = browser.new_context(**credentials)
        own = context.new_page()
        own.goto(f"{base}/")  # the user's own tab: the key asked for and cached (keyed)
        with attacker_site(attacker_pages(base, job_id)) as port:
            seen = attack(context, base, job_id, [f"http://localhost:{port}", f"http://{LOOPBACK}:{port}"])
        # The server's own page, in the same browser, still starts a job: the refusals are the site's, not JSON's.
        made = own.evaluate("""async () => { const r = await fetch('/classification-job', {method: 'POST',
          headers: {'Content-Type': 'application/json'}, body: JSON.stringify({classes: ['dogs'], dry_run: true})});
          return [r.status, (await r.json()).id]; }""")
        context.close()
        after = jobs_listed(base, headers)
        status = requests.get(f"{base}/classification-job/{job_id}", headers=headers, timeout=10).json()

    print("\n".join(seen))
    assert refused(seen) == [] and len(seen) == 2 * attempts(job_id) + 2
    assert made[0] == 201 and after == sorted(before + [made[1]])  # only the own page's job was added
    assert status["complete"]
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not
                  p.relative_to(root).as_posix().startswith((".imgclassify", "all/"))) == copies != []


# --- emulate's gateway, with a key -----------------------------------------------------------------------------
@contextlib.contextmanager
def gateway_over_fakes() -> Iterator[tuple[str, object]]:
    """emulate's gateway (SERVICE_KEY set) on a loopback port, in front of the functions' routes over the fakes."""
    from werkzeug.serving import make_server

    from common.bootstrap import handlers
    from common.http import create_app
    from common.routes import Function
    from imgclassify.local_stack import gateway_app
    from tests.fakes import SERVED, fake_app, solid_jpeg

    fake = fake_app()
    fake.objects.write("images", "all/cat.jpg", solid_jpeg("red"))
    functions = make_server(LOOPBACK, free_port(), create_app(handlers(*SERVED, application=lambda: fake),
                                                              dataclasses.replace(fake.settings, service_key=KEY)),
                            threaded=True)
    url = f"http://{LOOPBACK}:{functions.server_port}"
    gateway = make_server(LOOPBACK, free_port(), gateway_app({Function.CREATE_JOB: url, Function.JOB_STATUS: url},
                                                             lambda: [], service_key=KEY), threaded=True)
    for server in (functions, gateway):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{LOOPBACK}:{gateway.server_port}", fake
    finally:
        gateway.shutdown()
        functions.shutdown()


def test_another_site_cannot_act_through_emulates_gateway(browser):
    headers = {"Authorization": f"Bearer {KEY}"}
    with gateway_over_fakes() as (base, fake):
        job = requests.post(f"{base}/classification-job", json={"classes": ["tabby"]}, headers=headers,
                            timeout=30).json()
        while fake.publisher.messages:
            fake.classify_image(fake.publisher.messages.pop(0))
        before = (sorted(fake.jobs.jobs), sorted(fake.objects.objects), fake.jobs.undone_jobs())
        assert requests.get(f"{base}/", timeout=10).status_code == 401  # the front page needs the key too
        context = browser.new_context(http_credentials={"username": "me", "password": KEY, "origin": base})
        own = context.new_page()
        own.goto(f"{base}/")
        with attacker_site(attacker_pages(base, job["id"])) as port:
            seen = attack(context, base, job["id"], [f"http://localhost:{port}"])
        after = (sorted(fake.jobs.jobs), sorted(fake.objects.objects), fake.jobs.undone_jobs())
        undone = own.evaluate(f"""async () => (await fetch('/classification-job/{job["id"]}/undo', {{method: 'POST',
          headers: {{'Content-Type': 'application/json'}}, body: '{{}}'}})).status""")
        context.close()

    print("\n".join(seen))
    assert refused(seen) == [] and len(seen) == attempts(job["id"]) + 2
    assert after == before and undone == 200 and ("images", "tabby/cat.jpg") not in fake.objects.objects
