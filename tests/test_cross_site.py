"""Who can reach what (issue 28): only the Host names a server was started for are answered, and a request that
changes something is answered only when it is JSON and, from a browser, from the server's own origin. Property
tests (Hypothesis) over Host, Origin, Sec-Fetch-Site, content types and methods against the app `imgclassify serve`
builds through the composition root, over the in-memory fakes; the attacks that were tried, replayed; the functions
(configured and not) and emulate's gateway with a key."""
from __future__ import annotations

import base64
import dataclasses
import re
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from common.bootstrap import handlers
from common.config import Settings
from common.http import create_app
from common.pages import FrontPage
from common.routes import Action, Function
from tests.fakes import SERVED, FakeApp, fake_app, solid_jpeg

KEY = "s3cret-key"
EXTRA_HOST = "photos.example"  # what `serve --allowed-host photos.example` adds to the loopback names
PHOTO = solid_jpeg("red")  # the fake model calls it a tabby
BOUNDARY = {403, 415, 421}
PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


# --- the app under test ------------------------------------------------------------------------------------------
def serve_app(app: FakeApp, key: str = ""):  # type: ignore[no-untyped-def]
    """`imgclassify serve --allowed-host photos.example` over the fakes (SERVICE_KEY=key): a Flask test client."""
    config = dataclasses.replace(app.settings, service_key=key, allowed_hosts=(EXTRA_HOST,))
    empty = FrontPage([])  # an empty front page
    routes = {**handlers(*SERVED, application=lambda: app), Action.INDEX: lambda: lambda: empty}
    return create_app(routes, config).test_client()


def with_a_sorted_job(key: str = "") -> tuple[FakeApp, object, str]:
    """A service with one job over one photo, classified, its copy under tabby/: what an attacker would undo."""
    app = fake_app()
    app.objects.write("images", "all/cat.jpg", PHOTO)
    client = serve_app(app, key)
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    job = client.post("/classification-job", json={"classes": ["tabby"]}, headers=auth).get_json()
    while app.publisher.messages:
        app.classify_image(app.publisher.messages.pop(0))
    assert ("images", "tabby/cat.jpg") in app.objects.objects
    return app, client, job["id"]


def state(app: FakeApp) -> tuple:
    """Everything a write could change: the jobs, the objects (copies), undos, messages, corrections."""
    return (sorted(app.jobs.jobs), sorted(app.objects.objects), dict(app.jobs.undone_jobs()),
            len(app.publisher.messages), repr(app.ports.corrections.__dict__))


def writes(job_id: str) -> dict[str, tuple[str, str, object]]:
    """Every request that changes something, as a page or a client would send it: (method, path, JSON body)."""
    return {
        "create": ("POST", "/classification-job", {"classes": ["tabby"]}),
        "undo": ("POST", f"/classification-job/{job_id}/undo", {}),
        "undo by prefix": ("POST", f"/classification-job/{job_id[:4]}/undo", {}),
        "correct": ("POST", f"/classification-job/{job_id}/corrections",
                    {"corrections": [{"name": "all/cat.jpg", "class": "tabby", "belongs": False}]}),
        "retry": ("POST", f"/classification-job/{job_id}/retry", {}),
        "close": ("POST", f"/classification-job/{job_id}/close", {}),
    }


# --- what is allowed, said independently of the implementation ------------------------------------------------
ALLOWED_HOST = re.compile(r"(localhost|127\.0\.0\.1|\[::1]|photos\.example)(:([1-9][0-9]{0,4}))?")


def host_allowed(host: str | None) -> bool:
    found = ALLOWED_HOST.fullmatch((host or "").strip(" \t").lower())
    return bool(found) and (found.group(3) is None or int(found.group(3)) <= 65535)


def own_origin(host: str) -> str:
    return "http://" + re.sub(r":80$", "", host.strip(" \t").lower())


def origin_ok(origin: str | None, host: str) -> bool:
    return origin is None or re.sub(r":80$", "", origin.lower()) == own_origin(host)


def site_ok(site: str | None) -> bool:
    return not (site or "").strip() or site.strip().lower() in ("same-origin", "none")


def json_type(content_type: str | None) -> bool:
    return content_type is not None and content_type.split(";")[0].strip().lower() == "application/json"


# --- strategies: mostly what a real page or client sends, so that every single deviation is tried often -----------
def mostly(good: st.SearchStrategy, anything: st.SearchStrategy) -> st.SearchStrategy:
    # (one_of(good, good, good, anything) would not do: equal branches are merged into one)
    return st.integers(0, 3).flatmap(lambda draw: good if draw else anything)


OWN_NAMES = ["localhost", "127.0.0.1", "[::1]", EXTRA_HOST, "LocalHost", "PHOTOS.example"]
OTHER_NAMES = ["evil.example", "localhost.evil.example", "127.0.0.1.nip.io", "photos.example.evil",
               "sub.photos.example", "0.0.0.0", "127.0.0.2", "[::2]", "[::ffff:127.0.0.1]", "localhost.", "",
               "local host", "a_b"]
PORTS = ["", ":80", ":8080", ":1", ":65535"]
hosts = mostly(st.builds(lambda name, port: name + port, st.sampled_from(OWN_NAMES), st.sampled_from(PORTS)),
               st.one_of(st.builds(lambda name, port: name + port, st.sampled_from(OWN_NAMES + OTHER_NAMES),
                                   st.sampled_from(PORTS + [":65536", ":0", ":08080", ":x", ":"])),
                         st.text(PRINTABLE, max_size=40)))
fetch_sites = mostly(st.sampled_from([None, "same-origin", "none", "Same-Origin", " none "]),
                     st.one_of(st.sampled_from(["same-site", "cross-site", ""]), st.text(PRINTABLE, max_size=20)))
content_types = mostly(
    st.sampled_from(["application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8",
                     "application/json ;x=y"]),
    st.one_of(st.none(), st.sampled_from([
        "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=b", "application/jsonp", "text/json", "application/json-patch+json",
        "application/ld+json", "json", ""]), st.text(PRINTABLE, max_size=40)))


@st.composite
def origins(draw: st.DrawFn, host: str) -> str | None:
    kind = draw(st.sampled_from(["none", "own", "none", "own", "none", "own", "foreign", "text"]))
    if kind == "none":
        return None
    if kind == "own":
        return own_origin(host)
    if kind == "foreign":
        return draw(st.sampled_from(["http://evil.example", "null", "http://127.0.0.1:9", "https://localhost",
                                     "http://localhost:8081", "http://photos.example.evil", "file://",
                                     "http://[::1]:1", "http://localhost.evil.example"]))
    return draw(st.text(PRINTABLE, max_size=40))


def browser_headers(host: str, origin: str | None, site: str | None, content_type: str | None) -> dict[str, str]:
    headers = {"Host": host}
    for name, value in (("Origin", origin), ("Sec-Fetch-Site", site), ("Content-Type", content_type)):
        if value is not None:
            headers[name] = value
    return headers


def send(client, method: str, path: str, body: object, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    import json

    host = headers.pop("Host")
    return client.open(path, method=method, data=json.dumps(body), headers=headers,
                       environ_overrides={"HTTP_HOST": host})


PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- the properties ------------------------------------------------------------------------------------------------
@PROPERTY
@given(data=st.data(), which=st.sampled_from(["create", "undo", "undo by prefix", "correct", "retry", "close"]),
       host=hosts, site=fetch_sites, content_type=content_types, keyed=st.booleans())
def test_a_write_is_accepted_only_from_an_allowed_host_as_json_and_from_the_servers_own_origin(
        data, which, host, site, content_type, keyed):
    origin = data.draw(origins(host), label="origin")
    key = KEY if keyed else ""
    app, client, job_id = with_a_sorted_job(key)
    before = state(app)
    method, path, body = writes(job_id)[which]
    headers = browser_headers(host, origin, site, content_type)
    if keyed:  # as a browser sends cached credentials: Basic, the key as the password
        headers["Authorization"] = "Basic " + base64.b64encode(f"anyone:{KEY}".encode()).decode()

    response = send(client, method, path, body, headers)

    expected = host_allowed(host) and json_type(content_type) and site_ok(site) and origin_ok(origin, host)
    event("accepted" if expected else "refused")
    assert response.is_json and response.get_json()["code"] == response.status_code
    assert "Access-Control-Allow-Origin" not in response.headers
    if not expected:
        assert response.status_code in BOUNDARY, (response.status_code, response.get_json())
        assert state(app) == before
        return
    assert response.status_code not in BOUNDARY | {401}, response.get_json()
    if which == "create":
        assert response.status_code == 201 and len(app.jobs.jobs) == 2
    if which.startswith("undo"):
        assert response.status_code == 200 and ("images", "tabby/cat.jpg") not in app.objects.objects


@PROPERTY
@given(method=st.sampled_from(["PUT", "PATCH", "DELETE"]), host=hosts, site=fetch_sites, content_type=content_types)
def test_methods_no_route_has_change_nothing_whatever_they_carry(method, host, site, content_type):
    app, client, job_id = with_a_sorted_job()
    before = state(app)
    response = send(client, method, f"/classification-job/{job_id}", {}, browser_headers(
        host, "http://evil.example", site, content_type))
    assert response.is_json and response.status_code in {405, 421} and state(app) == before
    assert response.status_code == (405 if host_allowed(host) else 421)


@PROPERTY
@given(data=st.data(), path=st.sampled_from(["/", "/classification-job/{id}", "/classification-job/{id}/report",
                                             "/classification-job/{id}/report?format=csv",
                                             "/classification-job/{id}/thumbnail?name=all/cat.jpg",
                                             "/classification-job/{prefix}", "/classification-job/0000"]),
       host=hosts, site=fetch_sites,
       mode=st.sampled_from([None, "navigate", "no-cors", "cors", "same-origin"]),
       dest=st.sampled_from([None, "document", "image", "script", "iframe", "empty", "object"]))
def test_reads_from_another_site_are_answered_only_as_a_top_level_navigation(data, path, host, site, mode, dest):
    app, client, job_id = with_a_sorted_job()
    headers = browser_headers(host, None, site, None)
    headers |= {name: value for name, value in (("Sec-Fetch-Mode", mode), ("Sec-Fetch-Dest", dest)) if value}
    response = send(client, "GET", path.format(id=job_id, prefix=job_id[:4]), None, headers)

    navigation = mode == "navigate" and dest in (None, "document")
    expected = host_allowed(host) and (site_ok(site) or navigation)
    assert "Access-Control-Allow-Origin" not in response.headers
    assert response.headers["X-Frame-Options"] == "DENY" and response.headers["X-Content-Type-Options"] == "nosniff"
    if expected:
        assert response.status_code not in BOUNDARY, response.data[:200]
    else:
        assert response.status_code in BOUNDARY and response.is_json


# --- the attacks that were tried, replayed -----------------------------------------------------------------------
NO_CORS_TEXT = {"Content-Type": "text/plain;charset=UTF-8", "Origin": "http://attacker.example",
                "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "empty"}
FORM = {"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://attacker.example",
        "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}


def test_a_no_cors_text_plain_post_from_another_site_creates_no_job():
    app, client, _ = with_a_sorted_job()
    before = state(app)
    response = client.post("/classification-job", data='{"classes": ["tabby"]}', headers=NO_CORS_TEXT)
    assert response.status_code == 403 and response.get_json()["field"] == "Sec-Fetch-Site"
    assert state(app) == before


def test_guessing_id_prefixes_from_another_site_undoes_nothing_and_tells_nothing():
    app, client, job_id = with_a_sorted_job()
    before = state(app)
    guesses = {f"{i:04x}" for i in range(0, 65536, 257)} | {job_id[:4]}
    answers = {client.post(f"/classification-job/{guess}/undo", data="", headers=NO_CORS_TEXT).status_code
               for guess in guesses}
    probes = {client.get(f"/classification-job/{guess}/thumbnail?name=all/cat.jpg", headers={
        "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}).status_code
        for guess in guesses}
    assert answers == {403} and probes == {403}  # the real prefix answers exactly as the wrong ones
    assert state(app) == before


@pytest.mark.parametrize("headers, status", [
    (FORM, 403),  # a browser that says where it comes from
    ({k: v for k, v in FORM.items() if not k.startswith("Sec-")}, 403),  # Origin only (no fetch metadata)
    ({"Content-Type": FORM["Content-Type"]}, 415),  # a browser that says nothing: the form's type still tells
    ({**FORM, "Content-Type": "text/plain"}, 403),
])
def test_a_cross_site_form_riding_cached_basic_credentials_undoes_nothing(headers, status):
    app, client, job_id = with_a_sorted_job(KEY)
    before = state(app)
    basic = "Basic " + base64.b64encode(f"imgclassify:{KEY}".encode()).decode()
    response = client.post(f"/classification-job/{job_id}/undo", data="x=1",
                           headers={**headers, "Authorization": basic})
    assert response.status_code == status and response.is_json and state(app) == before
    # The same credentials from the page's own script work: they were right, the site was not.
    own = client.post(f"/classification-job/{job_id}/undo", json={}, headers={
        "Authorization": basic, "Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"})
    assert own.status_code == 200 and own.get_json()["removed"] == 1


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8080", "localhost.attacker.example",
                                  "127.0.0.1.attacker.example:8080", "", "bad host"])
def test_a_rebound_name_gets_421_json_naming_host_for_every_path_and_method(host):
    app, client, job_id = with_a_sorted_job()
    before = state(app)
    for method, path in [("GET", "/"), ("GET", f"/classification-job/{job_id}"), ("GET", "/nowhere"),
                         ("POST", "/classification-job"), ("POST", f"/classification-job/{job_id}/undo"),
                         ("OPTIONS", "/classification-job"), ("TRACE", "/")]:
        response = client.open(path, method=method, json={"classes": ["tabby"]},
                               environ_overrides={"HTTP_HOST": host}, headers={
                                   "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"})
        assert response.status_code == 421 and response.is_json, (method, path, response.data[:200])
        assert response.get_json()["field"] == "Host"
    assert state(app) == before


def test_the_servers_own_pages_and_old_clients_keep_working():
    app, client, job_id = with_a_sorted_job()
    page = {"Origin": "http://127.0.0.1:8080", "Sec-Fetch-Site": "same-origin"}
    on_port = {"HTTP_HOST": "127.0.0.1:8080"}
    created = client.post("/classification-job", json={"classes": ["tabby"], "dry_run": True}, headers=page,
                          environ_overrides=on_port)
    assert created.status_code == 201
    assert client.get("/", headers={"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate"}).status_code == 200
    linked = client.get(f"/classification-job/{job_id}/report", headers=FORM | {"Content-Type": ""})
    assert linked.status_code == 200 and linked.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
    # The old client: requests.post(json=...) — a JSON content type, no Origin, no fetch metadata.
    old = client.post("/classification-job", json={"classes": ["tabby"]}, environ_overrides={
        "HTTP_HOST": f"{EXTRA_HOST}:8080"})
    assert old.status_code == 201 and len(app.jobs.jobs) == 3
    preflight = client.options("/classification-job", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST", "Sec-Fetch-Site": "cross-site",
        "Sec-Fetch-Mode": "cors"})
    assert "Access-Control-Allow-Origin" not in preflight.headers and preflight.status_code == 403


# --- the deployed functions: checked when configured -----------------------------------------------------------
def function_client(fake_service, monkeypatch, name: str, **env: str):  # type: ignore[no-untyped-def]
    from pathlib import Path

    from functions_framework import create_app as function_app

    from common import bootstrap

    configured = dataclasses.replace(fake_service.settings, **env)
    monkeypatch.setattr(bootstrap, "settings", lambda: configured)
    monkeypatch.setattr(bootstrap, "app", lambda: fake_service)
    source = Path(__file__).resolve().parent.parent / "functions" / name / "main.py"
    return function_app(name, str(source), "http").test_client()


def test_the_functions_answer_any_host_unless_allowed_hosts_is_set(fake_service, monkeypatch):
    deployed = function_client(fake_service, monkeypatch, "create_job")
    answer = deployed.post("/", json={"classes": ["tabby"]}, environ_overrides={
        "HTTP_HOST": "create-job-abc-uc.a.run.app"})
    assert answer.status_code == 201
    configured = function_client(fake_service, monkeypatch, "create_job", allowed_hosts=("api.example.com",))
    wrong = configured.post("/", json={"classes": ["tabby"]}, environ_overrides={"HTTP_HOST": "evil.example"})
    right = configured.post("/", json={"classes": ["tabby"]}, environ_overrides={"HTTP_HOST": "api.example.com"})
    assert (wrong.status_code, wrong.get_json()["field"], right.status_code) == (421, "Host", 201)
    assert Settings.from_env({"ALLOWED_HOSTS": " a.example, b.example:8443 ,,"}).allowed_hosts == (
        "a.example", "b.example:8443")


def test_behind_a_gateway_the_function_knows_its_public_origin(fake_service, monkeypatch):
    """API Gateway rewrites Host to the function's: the page's Origin is the gateway's (STATUS_URL_BASE), or the one
    a proxy forwards (X-Forwarded-Host, as emulate's gateway sends it)."""
    fake_service.objects.write("images", "all/cat.jpg", PHOTO)
    function = function_client(fake_service, monkeypatch, "create_job",
                               status_url_base="https://gw-abc.uc.gateway.dev")
    at_function = {"HTTP_HOST": "us-central1-p.cloudfunctions.net"}
    page = {"Sec-Fetch-Site": "same-origin", "Origin": "https://gw-abc.uc.gateway.dev"}
    assert function.post("/", json={"classes": ["tabby"]}, headers=page,
                         environ_overrides=at_function).status_code == 201
    forwarded = {"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost:8080",
                 "X-Forwarded-Host": "localhost:8080", "X-Forwarded-Proto": "http"}
    assert function.post("/", json={"classes": ["tabby"]}, headers=forwarded,
                         environ_overrides=at_function).status_code == 201
    other = function.post("/", json={"classes": ["tabby"]}, headers={**page, "Origin": "https://evil.example"},
                          environ_overrides=at_function)
    assert other.status_code == 403 and other.get_json()["field"] == "Origin" and len(fake_service.jobs.jobs) == 2


# --- emulate's gateway, with a key -------------------------------------------------------------------------------
@pytest.fixture
def gateway(fake_service) -> Iterator[tuple[object, FakeApp]]:
    """emulate's gateway (SERVICE_KEY set) in front of one upstream serving both functions' routes over the
    fakes, on a loopback port (the gateway forwards over HTTP)."""
    from werkzeug.serving import make_server

    from imgclassify.emulation import LOOPBACK, free_port
    from imgclassify.local_stack import gateway_app

    fake_service.objects.write("images", "all/cat.jpg", PHOTO)
    upstream_settings = dataclasses.replace(fake_service.settings, service_key=KEY)
    upstream = make_server(LOOPBACK, free_port(), create_app(
        handlers(*SERVED, application=lambda: fake_service), upstream_settings), threaded=True)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    url = f"http://{LOOPBACK}:{upstream.server_port}"
    app = gateway_app({Function.CREATE_JOB: url, Function.JOB_STATUS: url}, lambda: [], service_key=KEY)
    try:
        yield app.test_client(), fake_service
    finally:
        upstream.shutdown()


def test_every_gateway_path_needs_the_key_the_front_page_included(gateway):
    client, fake = gateway
    for method, path in [("GET", "/"), ("GET", f"/classification-job/{'0' * 32}"), ("POST", "/classification-job")]:
        response = client.open(path, method=method, json={"classes": ["tabby"]})
        assert response.status_code == 401 and response.is_json and "Basic" in response.headers["WWW-Authenticate"]
    front = client.get("/", headers={"Authorization": f"Bearer {KEY}"})
    assert front.status_code == 200 and front.headers["X-Frame-Options"] == "DENY"
    assert fake.jobs.jobs == {}


def test_the_gateway_refuses_other_hosts_and_other_sites_even_with_the_key(gateway):
    client, fake = gateway
    basic = {"Authorization": "Basic " + base64.b64encode(f"u:{KEY}".encode()).decode()}
    rebound = client.get("/", headers=basic, environ_overrides={"HTTP_HOST": "attacker.example:8080"})
    form = client.post("/classification-job", data="classes=tabby", headers={**FORM, **basic})
    no_cors = client.post("/classification-job", data='{"classes": ["tabby"]}', headers={**NO_CORS_TEXT, **basic})
    bare_form = client.post("/classification-job", data="classes=tabby", headers={
        "Content-Type": FORM["Content-Type"], **basic})
    assert [rebound.status_code, form.status_code, no_cors.status_code, bare_form.status_code] == [421, 403, 403, 415]
    assert rebound.get_json()["field"] == "Host" and fake.jobs.jobs == {}
    # Its own page (same origin, the key cached) gets through, and the function behind agrees on the origin.
    own = client.post("/classification-job", json={"classes": ["tabby"]}, headers={
        **basic, "Origin": "http://localhost:8080", "Sec-Fetch-Site": "same-origin"},
        environ_overrides={"HTTP_HOST": "localhost:8080"})
    assert own.status_code == 201, own.get_json()
    assert len(fake.jobs.jobs) == 1


@pytest.mark.parametrize("body, status", [(None, 200), (b"", 200), (b"{}", 200), (b'{"anything": 1}', 200),
                                          (b"[]", 400), (b"615350879", 400), (b"not json", 400)])
def test_undo_takes_no_arguments_but_only_json_ones(body, status):
    app, client, job_id = with_a_sorted_job()
    response = client.post(f"/classification-job/{job_id}/undo", data=body, content_type="application/json")
    assert response.status_code == status and (status == 200 or response.get_json()["field"] == "body")
    assert (("images", "tabby/cat.jpg") in app.objects.objects) == (status != 200)


@pytest.mark.parametrize("host, answered", [
    ("example.org", True), ("photos.example.org:8443", True), ("a.b.example.org", True), ("example.org.evil", False),
    ("badexample.org", False), ("[::1]:9", True), ("[::2]", False), ("Nas.Local", True), ("nas.local.", False)])
def test_configured_names_leading_dots_and_ipv6_are_matched_as_names(host, answered):
    from common.routes import LOOPBACK_HOSTS, WrongHost, check_host

    allowed = (*LOOPBACK_HOSTS, ".example.org", "NAS.local:8080", "::1")
    try:
        check_host(host, allowed)
    except WrongHost:
        assert not answered
    else:
        assert answered
