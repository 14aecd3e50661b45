"""A class taught by example photos takes only what looks like them, decided against the folder's own photos (issue
30): the examples' ImageNet meaning where they agree on one, a margin over the folder's typical photo otherwise, and
a refusal, in one line, when the examples cannot tell anything from the folder. Synthetic features: fast."""
from __future__ import annotations

import numpy as np
import pytest

from common.domain.examples import MIN_BACKGROUND, _threshold, _unit, learn, meaning_of
from common.domain.matching import class_indices

DIMENSIONS = 32


def probabilities_under(word: str, rng: np.random.Generator, mass: float = 0.9) -> np.ndarray:
    """A photo the model takes for one of `word`'s ImageNet classes."""
    row = np.full(1000, (1 - mass) / 1000, np.float32)
    row[rng.choice(class_indices(word))] += mass
    return row


def around(rng: np.random.Generator, centre: np.ndarray, count: int, spread: float) -> np.ndarray:
    return (centre + spread * rng.standard_normal((count, DIMENSIONS))).astype(np.float32)


@pytest.fixture
def folder():
    """A mixed folder: 120 photos of everything (spread widely), 10 dogs (a tight group) and 6 pizzas the features
    put right beside the dogs (as a model's features put a brown round thing near a brown dog)."""
    rng = np.random.default_rng(7)
    dog = np.zeros(DIMENSIONS, np.float32)
    dog[0] = 3.0
    everything = around(rng, np.zeros(DIMENSIONS), 120, 1.0)
    dogs, pizzas = around(rng, dog, 10, 0.3), around(rng, dog, 6, 0.3)
    other_words = ["truck", "flower", "bird", "chair", "boat"]
    probabilities = {"everything": np.stack([probabilities_under(other_words[i % 5], rng) for i in range(120)]),
                     "dogs": np.stack([probabilities_under("dog", rng) for _ in range(10)]),
                     "pizzas": np.stack([probabilities_under("pizza", rng) for _ in range(6)])}
    return rng, dog, everything, dogs, pizzas, probabilities


def test_examples_that_agree_on_an_imagenet_meaning_take_only_photos_with_it(folder):
    rng, dog, everything, dogs, pizzas, probabilities = folder
    examples = around(rng, dog, 4, 0.3)
    background = np.concatenate([everything, dogs, pizzas])
    seen = np.concatenate([probabilities["everything"], probabilities["dogs"], probabilities["pizzas"]])
    model = learn({"pets": examples}, background, probabilities={"pets": np.stack(
        [probabilities_under("dog", rng) for _ in range(4)])}, background_probabilities=seen)

    assert model.meanings[0] is not None and model.meanings[0].synset == "dog.n.01"
    assert all(model.matches(f, p) == ("pets",) for f, p in zip(dogs, probabilities["dogs"], strict=True))
    assert not any(model.matches(f, p) for f, p in zip(pizzas, probabilities["pizzas"], strict=True))  # no pizza
    # Without the meaning (a .tflite's features alone, say), the pizzas are as near as the dogs: what it was.
    blind = learn({"pets": examples}, np.concatenate([everything, dogs, pizzas]))
    assert sum(bool(blind.matches(f)) for f in pizzas) >= 4


def test_without_a_meaning_a_photo_must_stand_out_of_the_folder_by_a_margin():
    """One odd example in four lowers the examples' own agreement until it takes photos of anything; the folder's
    median similarity plus three robust standard deviations holds the class to what stands out."""
    rng = np.random.default_rng(0)
    mine, odd = np.zeros(DIMENSIONS, np.float32), np.zeros(DIMENSIONS, np.float32)
    mine[0], odd[1] = 2.0, 2.0
    others, alike = around(rng, np.zeros(DIMENSIONS), 170, 1.0), around(rng, mine, 20, 0.3)
    examples = np.concatenate([around(rng, mine, 3, 0.3), around(rng, odd, 1, 0.3)])
    model = learn({"glorp": examples}, np.concatenate([others, alike]))

    similar = np.array([model.similarities(f)["glorp"] for f in np.concatenate([others, alike])])
    median = float(np.median(similar))
    spread = 1.4826 * float(np.median(np.abs(similar - median)))
    agreement_alone = _threshold(_unit(examples - model.centre))
    assert not model.refused
    assert model.thresholds[0] == pytest.approx(max(agreement_alone, median + 3 * spread), abs=1e-4)
    assert sum(model.similarities(f)["glorp"] >= agreement_alone for f in others) >= 3  # what it was
    assert not any(model.matches(f) for f in others) and sum(bool(model.matches(f)) for f in alike) >= 10


def test_examples_too_unlike_each_other_are_refused_with_the_reason():
    rng = np.random.default_rng(3)
    background = around(rng, np.zeros(DIMENSIONS), 200, 1.0)
    scattered = around(rng, np.zeros(DIMENSIONS), 4, 1.0)  # four photos like any others of the folder
    model = learn({"roses": scattered}, background)
    assert "roses" in model.refused and "too unlike each other" in model.refused["roses"]
    assert not any(model.matches(f) for f in background)


def test_a_folder_too_small_to_measure_is_decided_by_the_examples_alone():
    rng = np.random.default_rng(4)
    small = around(rng, np.zeros(DIMENSIONS), MIN_BACKGROUND - 1, 1.0)
    examples = around(rng, np.ones(DIMENSIONS), 3, 0.1)
    model = learn({"glorp": examples}, small)
    assert not model.refused and model.matches(np.ones(DIMENSIONS)) == ("glorp",)


def test_no_meaning_when_the_examples_disagree_or_the_folder_is_full_of_it():
    rng = np.random.default_rng(5)
    mixed = np.stack([probabilities_under(w, rng) for w in ("dog", "pizza", "truck", "chair")])
    assert meaning_of(mixed, np.zeros((0, 1000), np.float32)) is None
    dogs = np.stack([probabilities_under("dog", rng) for _ in range(4)])
    all_dogs = np.stack([probabilities_under("dog", rng) for _ in range(100)])
    assert meaning_of(dogs, np.zeros((0, 1000), np.float32)).synset == "dog.n.01"  # a small folder: ImageNet's odds
    assert meaning_of(dogs, all_dogs) is None  # a folder of dogs: "a dog" tells nothing apart there


def test_a_verdict_is_kept_with_the_photo_as_numbers_its_page_explains(folder):
    rng, dog, everything, dogs, pizzas, probabilities = folder
    model = learn({"pets": around(rng, dog, 4, 0.3)}, np.concatenate([everything, dogs]),
                  probabilities={"pets": np.stack([probabilities_under("dog", rng) for _ in range(4)])},
                  background_probabilities=np.concatenate([probabilities["everything"], probabilities["dogs"]]))
    kept = model.decide(dogs[0], probabilities["dogs"][0])[1]["pets"].explained("pets")
    assert set(kept) == {"pets", "pets/threshold", "pets/mass", "pets/wnid"}
    assert kept["pets"] >= kept["pets/threshold"] and kept["pets/mass"] >= 0.5
    assert f"n{int(kept['pets/wnid']):08d}" == model.meanings[0].wnid


# --- through the service ------------------------------------------------------------------------------------------
def sorted_folder(examples: dict[str, str]):
    """A fake app over 20 photos of three colours (features: the mean colour) and the given example photos."""
    from tests.fakes import fake_app, solid_jpeg

    app = fake_app()
    for number in range(20):
        colour = ("red", "green", "blue")[number % 3]
        app.objects.write("images", f"all/{colour}{number}.jpg", solid_jpeg(colour, (64 + number, 48)))
    for number, (name, colour) in enumerate(examples.items()):
        app.objects.write("images", name, solid_jpeg(colour, (40 + number, 30)))
    return app


def run_job(app, body: dict) -> tuple[dict, list]:
    from tests.fakes import served

    client = served(app)
    created = client.post("/classification-job", json=body)
    assert created.status_code == 201, created.get_json()
    while app.publisher.messages:
        app.classify_image(app.publisher.messages.pop(0))
    job_id = created.get_json()["id"]
    return client.get(f"/classification-job/{job_id}").get_json(), list(app.jobs.results(job_id))


def test_a_class_whose_examples_cannot_be_told_from_the_folder_sorts_nothing_and_says_why_in_one_line():
    app = sorted_folder({"examples/glorp/1.jpg": "red", "examples/glorp/2.jpg": "green",
                         "examples/glorp/3.jpg": "blue"})
    status, results = run_job(app, {"classes": ["glorp"], "examples": {"glorp": "examples/glorp/"}})
    assert status["failed"] == 20 and not list(app.objects.list_names("images", "glorp/"))
    reasons = {r.reason for r in results}
    assert len(reasons) == 1
    reason = reasons.pop()
    assert "\n" not in reason and "'glorp'" in reason and "too unlike each other" in reason


def test_each_taught_photo_keeps_its_similarity_and_the_threshold_it_was_held_to():
    app = sorted_folder({"examples/glorp/1.jpg": "red", "examples/glorp/2.jpg": "red"})
    status, results = run_job(app, {"classes": ["glorp"], "examples": {"glorp": "examples/glorp/"}})
    assert status["matches"] == {"glorp": 7}
    for result in results:
        kept = result.similarities
        assert (kept["glorp"] >= kept["glorp/threshold"] - 1e-4) == ("glorp" in result.matched)


def test_a_model_build_without_features_is_found_before_anything_is_sorted():
    from common.usecases.learn_examples import NO_FEATURES, examples_refusal
    from tests.fakes import FakeClassifier

    class Slim(FakeClassifier):
        def predict_with_features(self, pixels):
            return self.predict(pixels), None

    assert examples_refusal(FakeClassifier()) is None
    refusal = examples_refusal(Slim())
    assert refusal == NO_FEATURES and "\n" not in refusal and "--weights" in refusal
