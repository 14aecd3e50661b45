"""Classes taught by example photos (issue 20): the rule, the stored features, the request, and a second question
over known photos answered without the model. Fast: the fake model's features are the photo's mean colour."""
from __future__ import annotations

import numpy as np
import pytest

from common.domain.examples import background_sample, learn
from common.domain.predictions import CorruptPrediction, decode_stored, encode_probabilities
from tests.fakes import fake_app, served, solid_jpeg


def clusters(rng: np.random.Generator, centre: np.ndarray, count: int, spread: float = 0.05) -> np.ndarray:
    return centre + spread * rng.standard_normal((count, len(centre)))


def test_each_photo_goes_to_the_nearest_prototype_only_within_its_threshold_and_not_past_a_negative():
    rng = np.random.default_rng(0)
    a, b, elsewhere = np.eye(8)[0] + 1, np.eye(8)[1] + 1, np.eye(8)[5] + 1
    background = np.concatenate([clusters(rng, a, 20), clusters(rng, b, 20), clusters(rng, elsewhere, 40)])
    model = learn({"a": clusters(rng, a, 10), "b": clusters(rng, b, 10)}, background)

    assert model.matches(a + 0.01) == ("a",) and model.matches(b - 0.01) == ("b",)
    assert model.matches(elsewhere) == ()  # near neither: no class, whatever is nearest
    assert model.similarities(a)["a"] > model.similarities(a)["b"]

    corrected = learn({"a": clusters(rng, a, 10), "b": clusters(rng, b, 10)}, background,
                      negatives={"a": (a + 0.02)[None]})
    assert corrected.matches(a + 0.02) == ()  # marked "not a": nearer to the negative than to the prototype


def test_fewer_than_two_examples_cannot_calibrate_a_threshold():
    with pytest.raises(ValueError, match="at least 2"):
        learn({"a": np.ones((1, 4))}, np.ones((3, 4)))


def test_the_background_sample_is_even_and_the_same_for_every_instance():
    names = [f"all/{i:04d}.jpg" for i in range(1000)]
    sample = background_sample(list(reversed(names)), 100)
    assert len(sample) == 100 and sample == background_sample(names, 100) and sample[1] == "all/0010.jpg"


def test_features_are_stored_beside_the_probabilities_in_one_checked_entry():
    probabilities, features = np.random.default_rng(1).random((2, 1000)).astype(np.float32)
    blob = encode_probabilities(probabilities, features[:640])
    stored, stored_features = decode_stored(blob, 1000)
    assert np.array_equal(stored, probabilities) and np.allclose(stored_features, features[:640], atol=1e-3)
    assert decode_stored(encode_probabilities(probabilities), 1000)[1] is None  # an entry from before: no features
    altered = bytearray(blob)
    altered[-8] ^= 0xFF
    for broken in (blob[:-5], bytes(altered)):
        with pytest.raises(CorruptPrediction):
            decode_stored(broken, 1000)


def folder(app, **photos: str) -> None:
    for number, (name, colour) in enumerate(photos.items()):
        app.objects.write("images", name, solid_jpeg(colour, (64 + number, 48)))  # each photo its own bytes


@pytest.fixture
def app():
    app = fake_app()
    folder(app, **{"examples/glorp/1.jpg": "red", "examples/glorp/2.jpg": "red", "examples/glorp/3.jpg": "red",
                   "all/r1.jpg": "red", "all/r2.jpg": "red", "all/g1.jpg": "green", "all/g2.jpg": "green",
                   "all/b1.jpg": "blue", "all/b2.jpg": "blue"})
    return app


def deliver_all(app) -> None:
    while app.publisher.messages:
        app.classify_image(app.publisher.messages.pop(0))


def test_a_word_wordnet_lacks_is_a_class_when_it_has_examples(app):
    client = served(app)
    created = client.post("/classification-job", json={"classes": ["glorp"],
                                                        "examples": {"glorp": "examples/glorp"}})
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["example_photos"] == {"glorp": 3} and body["resolved"] == {"glorp": ["its example photos"]}
    deliver_all(app)

    status = client.get(f"/classification-job/{body['id']}").get_json()
    assert status["complete"] and status["matches"] == {"glorp": 2} and status["processed"] == 6
    assert status["examples"] == {"glorp": "examples/glorp/"}
    assert sorted(n for n in app.objects.list_names("images", "glorp/")) == ["glorp/r1.jpg", "glorp/r2.jpg"]
    similarities = {r.name: r.similarities["glorp"] for r in app.jobs.results(body["id"])}
    assert min(similarities["all/r1.jpg"], similarities["all/r2.jpg"]) > max(
        similarities["all/g1.jpg"], similarities["all/b1.jpg"])


def test_a_second_question_with_examples_over_known_photos_runs_no_model(app):
    client = served(app)
    client.post("/classification-job", json={"classes": ["tabby"]})  # stores probabilities and features
    deliver_all(app)
    calls = app.classifier.calls
    assert calls == 6

    job = client.post("/classification-job", json={"classes": ["glorp", "tabby"],
                                                    "examples": {"glorp": "examples/glorp/"}}).get_json()
    deliver_all(app)
    # The examples were new photos (3 model runs); the job's own photos, features and all, came from the store.
    assert app.classifier.calls == calls + 3
    again = client.post("/classification-job", json={"classes": ["glorp"], "min_score": 0.5,
                                                      "examples": {"glorp": "examples/glorp/"}}).get_json()
    deliver_all(app)
    assert app.classifier.calls == calls + 3
    status = client.get(f"/classification-job/{again['id']}").get_json()
    assert status["from_store"] == 6 and status["matches"] == {"glorp": 2}
    assert client.get(f"/classification-job/{job['id']}").get_json()["matches"] == {"glorp": 2, "tabby": 2}


def test_entries_stored_without_features_are_computed_again_once(app):
    from common.domain.predictions import content_fingerprint

    for name in app.objects.list_names("images", ""):
        data = app.objects.read("images", name)
        app.predictions.put("fake-model", content_fingerprint(data),
                            encode_probabilities(app.classifier.predict_with_features(
                                np.zeros((1, 224, 224, 3), np.uint8))[0][0]))  # probabilities only, as before
    app.classifier.calls = 0
    client = served(app)
    client.post("/classification-job", json={"classes": ["glorp"], "examples": {"glorp": "examples/glorp/"}})
    deliver_all(app)
    assert app.classifier.calls == 9  # every photo once, for its features
    client.post("/classification-job", json={"classes": ["glorp"], "examples": {"glorp": "examples/glorp/"},
                                              "min_score": 0.9})
    deliver_all(app)
    assert app.classifier.calls == 9


@pytest.mark.parametrize("body, field, words", [
    # no meaning and no examples: the 400 it was (a new client's request; an old client's gets the old rule)
    ({"classes": ["glorp"], "match": "hierarchy"}, "classes", "not a WordNet noun"),
    ({"classes": ["roses"], "examples": {"tulips": "examples/glorp/"}}, "examples", "not one of classes"),
    ({"classes": ["roses"], "examples": ["examples/glorp/"]}, "examples", "must be an object"),
    ({"classes": ["roses"], "examples": {"roses": "../all/"}}, "examples", "'.' or '..'"),
    ({"classes": ["roses"], "examples": {"roses": 3}}, "examples", "must be a string"),
    ({"classes": ["roses"], "examples": {"roses": "examples/none/"}}, "examples", "at least 2"),
    ({"classes": ["roses"], "examples": {"roses": "examples/glorp/"}, "match": "label"}, "examples", "hierarchy"),
])
def test_example_requests_are_checked_and_name_the_field(app, body, field, words):
    response = served(app).post("/classification-job", json=body)
    assert response.status_code == 400
    error = response.get_json()
    assert error["field"] == field and words in error["message"]
    assert not app.publisher.messages


def test_examples_that_cannot_teach_fail_the_jobs_images_with_the_reason(app):
    app.objects.write("images", "examples/bad/1.jpg", b"not an image")
    app.objects.write("images", "examples/bad/2.jpg", solid_jpeg("red"))
    client = served(app)
    job = client.post("/classification-job", json={"classes": ["glorp"],
                                                    "examples": {"glorp": "examples/bad/"}}).get_json()
    deliver_all(app)
    status = client.get(f"/classification-job/{job['id']}").get_json()
    assert status["complete"] and status["failed"] == 6
    reasons = {r.reason for r in app.jobs.results(job["id"])}
    assert len(reasons) == 1 and "'glorp' has 1 usable example photos" in reasons.pop()


# --- corrections ---------------------------------------------------------------------------------------------
def correct(client, job_id: str, *items: tuple[str, str, bool]):
    return client.post(f"/classification-job/{job_id}/corrections", json={"corrections": [
        {"name": name, "class": class_name, "belongs": belongs} for name, class_name, belongs in items]})


def copies(app, prefix: str) -> list[str]:
    return sorted(app.objects.list_names("images", prefix))


def test_a_correction_fixes_the_jobs_copies_at_once_and_later_jobs_follow_it(app):
    client = served(app)
    job = client.post("/classification-job", json={"classes": ["tabby"]}).get_json()
    deliver_all(app)
    assert copies(app, "tabby/") == ["tabby/r1.jpg", "tabby/r2.jpg"]

    response = correct(client, job["id"], ("all/r1.jpg", "tabby", False), ("all/b1.jpg", "Tabby", True))
    assert response.status_code == 200, response.get_json()
    done = response.get_json()["corrections"]
    assert done[0]["removed"] == ["tabby/r1.jpg"] and done[1]["copy"] == "Tabby/b1.jpg"
    assert copies(app, "tabby/") == ["tabby/r2.jpg"]

    later = client.post("/classification-job", json={"classes": ["tabby"], "dry_run": True}).get_json()
    deliver_all(app)
    assert {r.name for r in app.jobs.results(later["id"]) if r.matched} == {"all/r2.jpg", "all/b1.jpg"}


def test_the_jobs_manifest_follows_its_corrections_so_undo_removes_what_they_made(app):
    client = served(app)
    job = client.post("/classification-job", json={"classes": ["tabby"]}).get_json()
    deliver_all(app)
    correct(client, job["id"], ("all/r1.jpg", "tabby", False), ("all/b1.jpg", "favourites", True),
            ("all/b1.jpg", "keep", True))  # two corrections of one photo: both copies are the job's
    assert app.jobs.result(job["id"], "all/r1.jpg").written == ()
    assert app.jobs.result(job["id"], "all/b1.jpg").written == ("favourites/b1.jpg", "keep/b1.jpg")
    undone = client.post(f"/classification-job/{job['id']}/undo", json={}).get_json()
    assert (undone["removed"], undone["missing"]) == (3, 0)  # tabby/r2.jpg and the two corrections' copies
    assert copies(app, "") == sorted(n for n in copies(app, "") if n.startswith(("all/", "examples/")))


def test_the_same_question_asked_again_after_a_correction_follows_it(app):
    client = served(app)
    body = {"classes": ["tabby"], "dry_run": True}
    first = client.post("/classification-job", json=body).get_json()
    deliver_all(app)
    correct(client, first["id"], ("all/r1.jpg", "tabby", False))
    again = client.post("/classification-job", json=body).get_json()
    deliver_all(app)
    assert {r.name for r in app.jobs.results(again["id"]) if r.matched} == {"all/r2.jpg"}


def test_a_correction_never_removes_a_copy_someone_changed(app):
    client = served(app)
    job = client.post("/classification-job", json={"classes": ["tabby"]}).get_json()
    deliver_all(app)
    app.objects.write("images", "tabby/r1.jpg", b"the user's own file now")
    done = correct(client, job["id"], ("all/r1.jpg", "tabby", False)).get_json()["corrections"]
    assert done[0]["kept"] == ["tabby/r1.jpg"]
    assert app.objects.read("images", "tabby/r1.jpg") == b"the user's own file now"


def test_corrections_teach_a_word_wordnet_lacks_to_later_jobs_in_the_bucket(app):
    app.objects.write("images", "all/g3.jpg", solid_jpeg("green", (90, 60)))
    client = served(app)
    not_yet = client.post("/classification-job", json={"classes": ["glorp"], "match": "hierarchy"})
    assert not_yet.status_code == 400  # not yet a class
    job = client.post("/classification-job", json={"classes": ["tabby"]}).get_json()
    deliver_all(app)
    correct(client, job["id"], ("all/g1.jpg", "glorp", True), ("all/g2.jpg", "glorp", True),
            ("all/r1.jpg", "glorp", False))

    taught = client.post("/classification-job", json={"classes": ["glorp"]})
    assert taught.status_code == 201, taught.get_json()
    assert taught.get_json()["resolved"] == {"glorp": ["its example photos"]}
    deliver_all(app)
    matched = {r.name for r in app.jobs.results(taught.get_json()["id"]) if r.matched}
    assert matched == {"all/g1.jpg", "all/g2.jpg", "all/g3.jpg"}  # g3: learned from the two, not corrected


@pytest.mark.parametrize("body, words", [
    ({"corrections": [{"name": "all/nope.jpg", "class": "tabby", "belongs": True}]}, "not a photo this job"),
    ({"corrections": [{"name": "all/r1.jpg", "class": "a/b", "belongs": True}]}, "may not contain '/'"),
    ({"corrections": [{"name": "all/r1.jpg", "class": "all", "belongs": True}]}, "inside source_prefix"),
    ({"corrections": [{"name": "all/r1.jpg", "class": "tabby", "belongs": "yes"}]}, "true or false"),
    ({"corrections": []}, "1 to 500"),
    ({"fixes": []}, "the body must be"),
])
def test_corrections_are_checked_and_change_nothing_when_refused(app, body, words):
    client = served(app)
    job = client.post("/classification-job", json={"classes": ["tabby"]}).get_json()
    deliver_all(app)
    response = client.post(f"/classification-job/{job['id']}/corrections", json=body)
    assert response.status_code == 400 and words in response.get_json()["message"]
    assert response.get_json()["field"] == "corrections" and not app.ports.corrections.rows
    assert copies(app, "tabby/") == ["tabby/r1.jpg", "tabby/r2.jpg"]


def test_correcting_a_job_that_does_not_exist_is_a_404(app):
    assert correct(served(app), "0" * 32, ("all/r1.jpg", "tabby", True)).status_code == 404
