"""Issue 28: a stateful model of jobs and corrections over the HTTP API (`serve`'s app over the in-memory fakes,
built by the composition root). Random sequences of create (dry or not) / deliver (with duplicate and forged
messages) / undo / correct / retry / a user's own object put where a job once copied, and after every step:

- nothing the user put in the bucket (photos, their own objects) was removed or changed;
- every object the service wrote is owned by exactly one live job's manifest, and every owned copy is there;
- an undone job owns nothing; no job ever counts more than it listed;
- every answer is JSON with a status the API documents (never a 500).
"""
from __future__ import annotations

from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from common.domain.messages import ClassifyMessage
from tests.fakes import fake_app, served, solid_jpeg

PHOTOS = {"all/r1.jpg": ("red", 0), "all/r2.jpg": ("red", 1), "all/g1.jpg": ("green", 2),
          "all/b1.jpg": ("blue", 3), "all/trip/r3.jpg": ("red", 4)}
CLASSES = ("tabby", "golden retriever", "animal", "macaw")
DOCUMENTED = {200, 201, 400, 404, 409, 415, 429}


class ServiceUnderUse(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.app = fake_app()
        self.client = served(self.app)
        self.store = self.app.objects
        self.users: dict[str, bytes] = {}
        for name, (colour, number) in PHOTOS.items():
            self.users[name] = solid_jpeg(colour, (64 + number, 48))
            self.store.write("images", name, self.users[name])
        self.jobs: list[str] = []
        self.sent: list[ClassifyMessage] = []  # every message ever delivered: redelivered at will

    def _answer(self, response) -> dict:
        assert response.status_code in DOCUMENTED, (response.status_code, response.data[:300])
        assert response.is_json
        return response.get_json()

    def _deliver_all(self) -> None:
        while self.app.publisher.messages:
            message = self.app.publisher.messages.pop(0)
            self.sent.append(message)
            self.app.classify_image(message)

    @rule(classes=st.lists(st.sampled_from(CLASSES), min_size=1, max_size=2, unique=True), dry_run=st.booleans())
    def create(self, classes: list[str], dry_run: bool) -> None:
        body = self._answer(self.client.post("/classification-job", json={"classes": classes, "dry_run": dry_run}))
        if "id" in body:
            self.jobs.append(body["id"])
        self._deliver_all()

    @rule(pick=st.integers(0, 200), forged_name=st.sampled_from(["", "all/missing.jpg", "private/x.jpg"]))
    def redeliver(self, pick: int, forged_name: str) -> None:
        if not self.sent:
            return
        message = self.sent[pick % len(self.sent)]
        if forged_name:  # the same job, another name, the original's signature: not the job's message
            message = ClassifyMessage(message.job_id, forged_name, message.spec, sig=message.sig)
        self.app.classify_image(message)

    @rule()
    def redeliver_everything(self) -> None:
        """Pub/Sub's at-least-once, at its worst: every message ever sent, again."""
        for message in list(self.sent):
            self.app.classify_image(message)

    @rule(pick=st.integers(0, 20))
    def undo(self, pick: int) -> None:
        if self.jobs:
            self._answer(self.client.post(f"/classification-job/{self.jobs[pick % len(self.jobs)]}/undo", json={}))

    @rule(pick=st.integers(0, 20), photo=st.sampled_from(sorted(PHOTOS)), cls=st.sampled_from(CLASSES + ("pets",)),
          belongs=st.booleans(), twice=st.booleans())
    def correct(self, pick: int, photo: str, cls: str, belongs: bool, twice: bool) -> None:
        if self.jobs:
            item = {"name": photo, "class": cls, "belongs": belongs}
            self._answer(self.client.post(f"/classification-job/{self.jobs[pick % len(self.jobs)]}/corrections",
                                          json={"corrections": [item] * (2 if twice else 1)}))

    @rule(pick=st.integers(0, 20))
    def retry(self, pick: int) -> None:
        if self.jobs:
            self._answer(self.client.post(f"/classification-job/{self.jobs[pick % len(self.jobs)]}/retry", json={}))
            self._deliver_all()

    @rule(pick=st.integers(0, 50))
    def a_users_object_where_a_copy_once_was(self, pick: int) -> None:
        """The user's own object, the photo's very bytes, at a path a job wrote and no longer holds."""
        once = sorted({name for job_id in self.jobs for r in self.app.jobs.results(job_id)
                       for name in r.copies} - {n for b, n in self.store.objects if b == "images"})
        if once:
            name = once[pick % len(once)]
            photo = name.split("/", 1)[1]
            data = next((d for p, d in self.users.items() if p.endswith(photo)), b"")
            if data:
                self.store.objects[("images", name)] = data
                self.store.generations[("images", name)] = -1  # not what any job wrote
                self.users[name] = data

    @invariant()
    def the_users_objects_are_untouched(self) -> None:
        if hasattr(self, "store"):
            for name, data in self.users.items():
                assert self.store.objects.get(("images", name)) == data, f"{name}, the user's, was changed"

    @invariant()
    def the_manifests_equal_the_copies_in_the_bucket(self) -> None:
        if not hasattr(self, "store"):
            return
        owned: dict[str, str] = {}
        for job_id in self.jobs:
            job = self.app.jobs.get_job(job_id)
            counters = self.app.jobs.counters(job_id)
            assert counters.processed + counters.failed <= (job.number_of_files or 0)
            undone = self.app.jobs.undone_at(job_id) is not None
            for result in self.app.jobs.results(job_id):
                assert not (undone and result.written), "an undone job owns a copy"
                for name in result.written:
                    assert name not in owned, f"{name} owned by two jobs"
                    owned[name] = result.identities.get(name, "")
        written = {n: g for (b, n), g in self.store.generations.items() if b == "images" and n not in self.users}
        assert set(written) == set(owned), "the bucket's copies and the manifests differ"
        for name, identity in owned.items():
            assert str(written[name]) == identity, f"{name} is not the object its job wrote"


ServiceUnderUse.TestCase.settings = settings(max_examples=150, stateful_step_count=20, deadline=None,
                                             suppress_health_check=[HealthCheck.too_slow])
test_service_under_use = ServiceUnderUse.TestCase
