"""Every decision explains itself on the results page (issue 30): a taught class's photo shows its similarity against
the class's threshold (and what the model sees in it, where the examples' meaning counted), a detector's match the
detector's score where the classifier's would be, a photo put there by a correction says so; none shows "score
0.00" as its reason."""
from __future__ import annotations

import json
import re

import pytest

from common.domain.jobs import JobRecord, JobSpec
from common.domain.results import Counters, ImageResult, Label
from common.domain.status import status_view
from common.bootstrap import handlers
from common.http import create_app
from common.pages import FrontPage, render_file
from common.routes import Action
from tests.fakes import SERVED, fake_app, served, solid_jpeg
from tests.test_real_folders import Folder, put

SPEC = JobSpec(classes=("pets", "people", "roses"), bucket="local", examples=(("pets", "examples/pets/"),))
LABELS = (Label(207, "golden retriever", 0.91),)


def page(*results: ImageResult) -> str:
    view = status_view(JobRecord("a" * 32, SPEC, len(results), "2026-01-01T00:00:00+00:00"), Counters())
    return render_file(view, results, "html", lambda name, box: None)[1]


def figure(html: str, section: str, name: str) -> str:
    block = html.split(f'data-class="{section}"', 1)[1].split("</section>", 1)[0]
    return re.search(rf'<figure data-file="{name}".*?</figure>', block, re.S).group(0)


def test_a_taught_photo_shows_its_similarity_against_the_threshold_and_what_the_model_sees():
    dog = ImageResult("all/dog.jpg", True, ("pets",), LABELS, scores={"pets": 0.0, "people": 0.0, "roses": 0.0},
                      similarities={"pets": 0.71, "pets/threshold": 0.64, "pets/mass": 0.93, "pets/wnid": 2084071.0},
                      copies=("pets/dog.jpg",))
    shown = figure(page(dog), "pets", "dog.jpg")
    assert "like your examples: the model sees dog in it, 0.93 ≥ 0.50" in shown
    assert "nearer them than this folder's typical photo: 0.71 ≥ 0.64" in shown.replace("&#39;", "'")
    assert "score 0.00" not in shown and 'data-score="0.9300"' in shown
    plain = ImageResult("all/glorp.jpg", True, ("pets",), LABELS, scores={"pets": 0.0, "people": 0.0, "roses": 0.0},
                        similarities={"pets": 0.71, "pets/threshold": 0.64}, copies=("pets/glorp.jpg",))
    assert "like your examples: 0.71 ≥ 0.64" in figure(page(plain), "pets", "glorp.jpg")


def test_a_detectors_match_shows_the_detectors_score_where_the_classifiers_would_be():
    person = ImageResult("all/me.jpg", True, ("people",), LABELS, scores={"pets": 0.0, "people": 0.02, "roses": 0.0},
                         detections={"people": {"label": "person", "score": 0.87, "box": [0.1, 0.1, 0.5, 0.9]}},
                         copies=("people/me.jpg",))
    shown = figure(page(person), "people", "me.jpg")
    assert re.search(r'class="score detected"[^>]*>detector: person 0\.87 ≥ 0\.\d+<', shown)
    assert "score 0.02" not in shown and 'data-score="0.8700"' in shown


def test_a_photo_a_correction_put_in_a_class_says_so():
    rose = ImageResult("all/rose.jpg", True, ("roses",), LABELS, scores={"pets": 0.0, "people": 0.0, "roses": 0.01},
                       copies=("roses/rose.jpg",))
    assert "here by a correction" in figure(page(rose), "roses", "rose.jpg")


def test_an_unmatched_photo_shows_how_far_it_was_from_a_taught_class():
    cat = ImageResult("all/cat.jpg", True, (), LABELS, scores={"pets": 0.0, "people": 0.0, "roses": 0.0},
                      similarities={"pets": 0.31, "pets/threshold": 0.64})
    html = page(cat)
    block = html.split('data-section="unmatched"', 1)[1]
    assert "like your pets examples: 0.31 &lt; 0.64" in block


def test_an_unmatched_photo_like_the_examples_says_the_model_sees_something_else_in_it():
    pizza = ImageResult("all/pizza.jpg", True, (), LABELS, scores={"pets": 0.0, "people": 0.0, "roses": 0.0},
                        similarities={"pets": 0.70, "pets/threshold": 0.64, "pets/mass": 0.01, "pets/wnid": 2084071.0})
    block = page(pizza).split('data-section="unmatched"', 1)[1]
    assert "like your pets examples (0.70 ≥ 0.64), but the model sees dog in it only 0.01 &lt; 0.50" in block


def test_a_corrected_photo_is_shown_where_its_copies_now_are():
    """"not roses" took the job's copy away; "add to people" made one; "add to keepers" (no class of the job) too."""
    view = status_view(JobRecord("b" * 32, SPEC, 2, "2026-01-01T00:00:00+00:00"), Counters())
    moved = ImageResult("all/x.jpg", True, ("roses",), LABELS, scores={"pets": 0.0, "people": 0.0, "roses": 0.6},
                        copies=("people/x.jpg", "keepers/x.jpg"), written=("people/x.jpg", "keepers/x.jpg"))
    html = render_file(view, [moved], "html", lambda name, box: None)[1]
    assert "x.jpg" not in html.split('data-class="roses"', 1)[1].split("</section>", 1)[0]
    people = figure(html, "people", "x.jpg")
    assert "here by a correction" in people and "added to keepers (a correction)" in people


def _sorted_and_corrected(app, write, settle) -> str:
    """red r1, r2 (tabby) and blue b (macaw) sorted; then "not tabby" on r1 and r2 and "add to macaw" on r1."""
    for name, colour in (("r1.jpg", "red"), ("r2.jpg", "red"), ("b.jpg", "blue")):
        write(name, solid_jpeg(colour, (64 + len(name), 48)))
    job_id = app.create_job({"classes": ["tabby", "macaw"]}).id
    settle()
    said = app.correct_job(job_id, {"corrections": [
        {"name": "r1.jpg", "class": "tabby", "belongs": False}, {"name": "r2.jpg", "class": "tabby", "belongs": False},
        {"name": "r1.jpg", "class": "macaw", "belongs": True}]})
    assert [c["name"] for c in said["corrections"]] == ["all/r1.jpg", "all/r2.jpg", "all/r1.jpg"]
    return job_id


def deliver(app) -> None:
    while app.publisher.messages:
        app.classify_image(app.publisher.messages.pop(0))


def _shown(html: str, attribute: str, value: str) -> list[str]:
    block = html.split(f'{attribute}="{value}"', 1)[1].split("</section>", 1)[0]
    return re.findall(r'<figure data-file="([^"]+)"', block)


WHERE = {("data-class", "tabby"): [], ("data-class", "macaw"): ["b.jpg", "r1.jpg"],
         ("data-section", "unmatched"): ["r2.jpg"]}


@pytest.fixture(params=["folder", "memory"])
def corrected(request, tmp_path):
    """An application over SQLite (a folder, its pages read through the index) or over the fakes (filtered in the
    use case), sorted and corrected."""
    if request.param == "folder":
        folder = Folder(tmp_path)
        app = folder.app
        job_id = _sorted_and_corrected(app, lambda name, data: put(tmp_path / "all" / name, data), app.wait)
        yield app, job_id
        app.stop()
    else:
        app = fake_app()
        write = lambda name, data: app.objects.write("images", f"all/{name}", data)  # noqa: E731
        yield app, _sorted_and_corrected(app, write, lambda: deliver(app))


def test_after_a_reload_the_served_page_and_its_pages_show_a_corrected_photo_where_it_now_belongs(corrected):
    app, job_id = corrected
    client = served(app)
    page = client.get(f"/classification-job/{job_id}/report").get_data(as_text=True)
    assert {where: _shown(page, *where) for where in WHERE} == WHERE
    for (attribute, value), names in WHERE.items():
        section = ("class:" if attribute == "data-class" else "section:") + value
        answer = client.get(f"/classification-job/{job_id}/results", query_string={"section": section}).get_json()
        assert (answer["total"], re.findall(r'<figure data-file="([^"]+)"', answer["html"])) == (len(names), names)
    found = client.get(f"/classification-job/{job_id}/results", query_string={"section": "class:macaw", "q": "r1"})
    assert found.get_json()["total"] == 1  # a search finds it where it is now


def test_the_file_report_shows_a_corrected_photo_where_it_now_belongs(corrected):
    app, job_id = corrected
    report = app.report(job_id)
    html = render_file(report.view, report.results, "html", lambda name, box: None)[1]
    assert {where: _shown(html, *where) for where in WHERE} == WHERE


def test_the_served_front_page_suggests_the_servers_taught_classes_first_then_the_detectors():
    app = fake_app()
    taught = status_view(JobRecord("c" * 32, JobSpec(("roses",), "images", examples=(("roses", "examples/r/"),)), 1,
                                   "2026-01-01T00:00:00+00:00"), Counters())
    front = FrontPage([(taught, None)], ("receipts",))  # what `serve --examples receipts=FOLDER` answers
    routes = {**handlers(*SERVED, application=lambda: app), Action.INDEX: lambda: lambda: front}
    page = create_app(routes, app.settings).test_client().get("/").get_data(as_text=True)
    words = json.loads(page.split('id="vocabulary-words">', 1)[1].split("</script>", 1)[0])
    assert words[:3] == ["receipts", "roses", "people"] and {"horse", "giraffe"} <= set(words[:120])
    assert re.search(r"output\.error\{color:#a00", page)  # an error is not in success's colour (output's #0a5)
