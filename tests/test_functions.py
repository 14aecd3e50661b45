"""Each function through functions-framework's own app, with in-memory fakes behind it."""
import base64
from pathlib import Path

import pytest
from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent
from functions_framework import create_app

from common import bootstrap
from common.domain.errors import ConfigurationError, TransientError
from common.domain.messages import PUBSUB_MESSAGE_PUBLISHED
from tests.fakes import solid_jpeg

FUNCTIONS = Path(__file__).resolve().parent.parent / "functions"


@pytest.fixture
def service(fake_service, monkeypatch):
    """The functions' composition root, pointed at the in-memory fakes."""
    monkeypatch.setattr(bootstrap, "settings", lambda: fake_service.settings)
    monkeypatch.setattr(bootstrap, "app", lambda: fake_service)
    return fake_service


def client(name, signature="http"):
    return create_app(name, str(FUNCTIONS / name / "main.py"), signature).test_client()


def pubsub_event(data: bytes, event_type=PUBSUB_MESSAGE_PUBLISHED):
    return CloudEvent({"type": event_type, "source": "//pubsub.googleapis.com/projects/p/topics/t"},
                      {"message": {"data": base64.b64encode(data).decode(), "messageId": "1"}})


def deliver(classify, message):
    headers, body = to_structured(pubsub_event(message.to_bytes()))
    return classify.post("/", headers=headers, data=body)


def upload(service, **names_to_colours):
    for name, colour in names_to_colours.items():
        service.objects.write("images", f"all/{name}", solid_jpeg(colour))


def test_create_job_lists_records_and_publishes_one_message_per_image(service):
    upload(service, **{"a.jpg": "red", "b.jpg": "green", "sub/c.jpg": "blue"})
    service.objects.write("images", "other/x.jpg", solid_jpeg("red"))

    response = client("create_job").post("/classification-job", json={"classes": ["tabby", "macaw"]})

    assert response.status_code == 201
    body = response.get_json()
    assert (body["classes"], body["complete"], body["percentage"], body["number_of_files"]) == (
        ["tabby", "macaw"], False, 0, 3)
    assert body["status_url"].endswith(f"/classification-job/{body['id']}")
    assert sorted(m.name for m in service.publisher.messages) == ["all/a.jpg", "all/b.jpg", "all/sub/c.jpg"]


def test_create_job_also_answers_on_the_function_root(service):
    upload(service, **{"a.jpg": "red"})
    assert client("create_job").post("/", json={"classes": ["dog"]}).status_code == 201


def test_create_job_on_an_empty_prefix_is_complete_at_once(service):
    body = client("create_job").post("/", json={"classes": ["dog"]}).get_json()
    assert (body["number_of_files"], body["complete"], body["percentage"]) == (0, True, 100)


@pytest.mark.parametrize("kwargs, status, field", [
    ({"data": "not json", "content_type": "application/json"}, 400, "body"),
    ({"json": {"classes": []}}, 400, "classes"),
    ({"json": {"classes": ["../etc"]}}, 400, "classes"),
    ({"json": {"classes": ["dog"], "extra": 1}}, 400, "extra"),
    ({"data": "x" * 70000, "content_type": "application/json"}, 413, "body"),
])
def test_create_job_rejects_bad_requests_with_json_naming_the_field(service, kwargs, status, field):
    response = client("create_job").post("/classification-job", **kwargs)
    assert response.status_code == status and response.is_json
    assert response.get_json()["field"] == field
    assert service.jobs.jobs == {} and service.publisher.messages == []


def test_create_job_wrong_method_and_path_are_json(service):
    assert client("create_job").get("/").status_code == 405
    response = client("create_job").post("/nope", json={"classes": ["dog"]})
    assert response.status_code == 404 and response.is_json


def test_classify_image_copies_to_each_matching_class_and_counts_once(service):
    upload(service, **{"cat.jpg": "red", "bird.jpg": "blue"})
    client("create_job").post("/", json={"classes": ["tabby", "macaw", "golden retriever"]})
    classify = client("classify_image", "cloudevent")

    for message in service.publisher.messages:
        assert deliver(classify, message).status_code == 200
    for message in service.publisher.messages:  # Pub/Sub delivers at least once
        assert deliver(classify, message).status_code == 200

    objects = service.objects.objects
    assert ("images", "tabby/cat.jpg") in objects and ("images", "macaw/bird.jpg") in objects
    assert objects[("images", "tabby/cat.jpg")] == objects[("images", "all/cat.jpg")]
    assert service.objects.copies == 2 and service.classifier.calls == 2
    job_id = service.publisher.messages[0].job_id
    status = client("job_status").get(f"/classification-job/{job_id}").get_json()
    assert (status["processed"], status["failed"], status["complete"], status["percentage"]) == (2, 0, True, 100)
    assert status["matches"] == {"tabby": 1, "macaw": 1, "golden retriever": 0}


def test_classify_image_counts_a_poison_image_as_failed_and_acks(service):
    service.objects.write("images", "all/broken.jpg", b"not an image")
    client("create_job").post("/", json={"classes": ["tabby"]})

    response = deliver(client("classify_image", "cloudevent"), service.publisher.messages[0])

    assert response.status_code == 200
    job_id = service.publisher.messages[0].job_id
    [result] = service.jobs.results(job_id)
    assert not result.ok and result.reason.startswith("not a recognised image format")
    status = client("job_status").get(f"/?id={job_id}").get_json()
    assert (status["failed"], status["complete"]) == (1, True)


def test_classify_image_acks_and_drops_malformed_messages(service):
    classify = client("classify_image", "cloudevent")
    headers, body = to_structured(pubsub_event(b"{not json"))
    assert classify.post("/", headers=headers, data=body).status_code == 200
    headers, body = to_structured(pubsub_event(b"{}", event_type="some.other.event"))
    assert classify.post("/", headers=headers, data=body).status_code == 200
    assert service.classifier.calls == 0


def test_classify_image_accepts_a_raw_pubsub_push_body(service):
    upload(service, **{"cat.jpg": "red"})
    client("create_job").post("/", json={"classes": ["tabby"]})
    message = service.publisher.messages[0]
    push = {"subscription": "projects/p/subscriptions/s",
            "message": {"data": base64.b64encode(message.to_bytes()).decode(), "messageId": "7"}}

    assert client("classify_image", "cloudevent").post("/", json=push).status_code == 200
    assert ("images", "tabby/cat.jpg") in service.objects.objects


def test_job_status_unknown_and_malformed_ids(service):
    status = client("job_status")
    unknown = "0" * 32
    response = status.get(f"/classification-job/{unknown}")
    assert response.status_code == 404
    assert response.get_json() == {"code": 404, "message": f"Job {unknown} not found", "field": "id"}
    assert status.get("/classification-job/..%2F..%2Fetc").status_code == 404
    assert status.get("/").status_code == 400
    assert status.post(f"/classification-job/{unknown}").status_code == 405


def test_service_key_is_required_when_configured(service, monkeypatch):
    monkeypatch.setattr(bootstrap, "settings", lambda: service.settings.__class__(bucket="images",
                                                                                  service_key="s3cret"))
    create = client("create_job")
    denied = create.post("/", json={"classes": ["dog"]})
    assert denied.status_code == 401 and denied.get_json()["field"] == "Authorization"
    assert create.post("/", json={"classes": ["dog"]}, headers={"Authorization": "s3cret"}).status_code == 201
    assert create.post("/", json={"classes": ["dog"]},
                       headers={"Authorization": "Bearer s3cret"}).status_code == 201


def test_create_job_shows_what_each_class_resolved_to_and_warns_on_weak_ones(service):
    body = client("create_job").post("/", json={"classes": ["trucks", "people"]}).get_json()
    assert body["resolved"]["trucks"] == ["truck.n.01 (8 ImageNet classes)"]
    assert body["resolved"]["people"] == ["person.n.01 (3 ImageNet classes)"]
    assert len(body["warnings"]) == 1 and "'people'" in body["warnings"][0]  # no detector in this service


def test_create_job_rejects_a_class_that_means_nothing_with_suggestions(service):
    response = client("create_job").post("/", json={"classes": ["dog", "dgo"], "match": "hierarchy"})
    assert response.status_code == 400
    body = response.get_json()
    assert body["field"] == "classes" and "classes[1] 'dgo'" in body["message"] and "dingo" in body["suggestions"]
    assert service.jobs.jobs == {}


def test_classify_image_raises_on_a_transient_error_so_pubsub_redelivers(service, monkeypatch):
    upload(service, **{"cat.jpg": "red"})
    client("create_job").post("/", json={"classes": ["tabby"]})

    def unavailable(bucket, name):
        raise TransientError("storage is down")

    monkeypatch.setattr(service.objects, "read", unavailable)
    response = deliver(client("classify_image", "cloudevent"), service.publisher.messages[0])

    assert response.status_code == 500
    assert list(service.jobs.results(service.publisher.messages[0].job_id)) == []


@pytest.mark.parametrize("error, status, recorded", [
    (KeyError("a bug"), 200, "internal error: KeyError: 'a bug'"),  # failed and acked: never redelivered forever
    (ConfigurationError("weights file not found"), 500, None),  # redelivered: an operator fixes it, then it passes
])
def test_the_retry_policy_fails_a_bug_and_redelivers_a_misconfiguration(service, monkeypatch, error, status,
                                                                         recorded):
    upload(service, **{"cat.jpg": "red"})
    client("create_job").post("/", json={"classes": ["tabby"]})

    def predict(pixels):
        raise error

    monkeypatch.setattr(service.classifier, "predict", predict)
    response = deliver(client("classify_image", "cloudevent"), service.publisher.messages[0])

    assert response.status_code == status
    job_id = service.publisher.messages[0].job_id
    results = list(service.jobs.results(job_id))
    assert [r.reason for r in results] == ([recorded] if recorded else [])
    status_body = client("job_status").get(f"/classification-job/{job_id}").get_json()
    if recorded is None:  # the job says why it is not moving, instead of "running" forever
        assert status_body["state"] == "stalled"
        assert status_body["errors"] == ["classify_image: weights file not found"]


@pytest.mark.parametrize("error, retry_after", [(TransientError("firestore: ServiceUnavailable"), "5"),
                                                (ConfigurationError("permission denied"), "60")])
def test_a_dependency_failure_in_create_job_is_a_json_503_with_retry_after(service, monkeypatch, error, retry_after):
    def failing(job):
        raise error

    monkeypatch.setattr(service.jobs, "create_job", failing)
    response = client("create_job").post("/", json={"classes": ["dog"]})

    assert response.status_code == 503 and response.is_json
    assert response.headers["Retry-After"] == retry_after and str(error) in response.get_json()["message"]


def test_classify_image_takes_the_jobs_settings_from_its_record_never_from_the_message(service):
    """Issue 21: a forged push naming a real job but another prefix, other classes or looser thresholds copies
    and counts nothing the job did not ask for; one for a job that does not exist is refused."""
    import dataclasses

    upload(service, **{"cat.jpg": "red"})
    service.objects.write("images", "private/secret.jpg", solid_jpeg("blue"))
    client("create_job").post("/", json={"classes": ["tabby"]})
    [genuine] = service.publisher.messages
    job_id = genuine.job_id
    classify = client("classify_image", "cloudevent")
    loose = dataclasses.replace(genuine.spec, classes=("macaw", "tabby"), min_score=0.0)
    forged = [
        dataclasses.replace(genuine, name="private/secret.jpg",
                            spec=dataclasses.replace(loose, source_prefix="private/")),  # outside the job's prefix
        dataclasses.replace(genuine, name="all/../private/secret.jpg"),  # climbing out of it
        dataclasses.replace(genuine, job_id="f" * 32),  # a job nobody created
    ]
    for message in forged:
        assert deliver(classify, message).status_code == 200  # acked: redelivering it would change nothing
    assert deliver(classify, dataclasses.replace(genuine, spec=loose)).status_code == 200  # the record's spec

    status = client("job_status").get(f"/classification-job/{job_id}").get_json()
    assert (status["processed"], status["failed"], status["matches"]) == (1, 0, {"tabby": 1})
    assert sorted(name for (_, name) in service.objects.objects if not name.startswith(("all/", "private/"))) == \
        ["tabby/cat.jpg"]
    assert [r.name for r in service.jobs.results("f" * 32)] == []


def test_a_job_whose_messages_were_lost_turns_stalled_and_a_retry_republishes_exactly_the_rest(service):
    """Issue 21: the Pub/Sub emulator restarted mid-job (messages gone): the job says it is stalled and why after a
    bounded time; POST …/retry (or the same request_id again) publishes exactly the images without a result."""
    from datetime import UTC, datetime, timedelta

    from common.domain.status import STALL_SECONDS, status_view

    upload(service, **{f"{n}.jpg": "red" for n in range(5)})
    create = client("create_job")
    job = create.post("/", json={"classes": ["tabby"], "request_id": "batch-7"}).get_json()
    classify = client("classify_image", "cloudevent")
    for message in service.publisher.messages[:2]:
        deliver(classify, message)
    service.publisher.messages.clear()  # the other three are lost
    record = service.jobs.get_job(job["id"])
    later = datetime.now(UTC) + timedelta(seconds=STALL_SECONDS + 5)
    stuck = status_view(record, service.jobs.counters(job["id"]), now=later)
    assert stuck.state == "stalled" and "2 of 5 done" in stuck.stalled and "/retry" in stuck.stalled
    assert status_view(record, service.jobs.counters(job["id"])).state == "running"  # not before the bound

    retried = create.post(f"/classification-job/{job['id']}/retry", json={}).get_json()
    assert retried["republished"] == 3
    assert sorted(m.name for m in service.publisher.messages) == ["all/2.jpg", "all/3.jpg", "all/4.jpg"]
    for message in list(service.publisher.messages) * 2:  # and duplicates change nothing
        deliver(classify, message)
    status = client("job_status").get(f"/classification-job/{job['id']}").get_json()
    assert (status["processed"], status["complete"], status["matches"]) == (5, True, {"tabby": 5})
    assert service.objects.copies == 5


def test_replaying_a_stalled_jobs_request_re_drives_it(service, monkeypatch):
    from common.domain import status as status_module

    upload(service, **{"a.jpg": "red", "b.jpg": "red"})
    create = client("create_job")
    body = {"classes": ["tabby"], "request_id": "again-1"}
    job = create.post("/", json=body).get_json()
    service.publisher.messages.clear()  # lost
    assert create.post("/", json=body).get_json().get("republished") is None  # not stalled yet: as it was
    monkeypatch.setattr(status_module, "STALL_SECONDS", -1)
    replayed = create.post("/", json=body).get_json()
    assert replayed["id"] == job["id"] and replayed["republished"] == 2 and len(service.publisher.messages) == 2


def test_retrying_an_unknown_job_is_a_404(service):
    assert client("create_job").post(f"/classification-job/{'e' * 32}/retry", json={}).status_code == 404


def dead_letter_event(data: bytes, **attributes: str):
    return CloudEvent({"type": PUBSUB_MESSAGE_PUBLISHED, "source": "//pubsub.googleapis.com/projects/p/topics/dl"},
                      {"message": {"data": base64.b64encode(data).decode(), "messageId": "9",
                                   "attributes": {"CloudPubSubDeadLetterSourceDeliveryCount": "10", **attributes}}})


def post_event(function, event):
    headers, body = to_structured(event)
    return function.post("/", headers=headers, data=body)


def test_an_image_pubsub_gave_up_on_is_recorded_once_and_its_job_completes(service):
    """Issue 21: the dead-letter consumer records what nothing consumed before."""
    upload(service, **{"a.jpg": "red", "b.jpg": "red"})
    job = client("create_job").post("/", json={"classes": ["tabby"]}).get_json()
    first, lost = service.publisher.messages
    deliver(client("classify_image", "cloudevent"), first)
    dead_letter = client("dead_letter", "cloudevent")

    assert post_event(dead_letter, dead_letter_event(lost.to_bytes())).status_code == 200
    assert post_event(dead_letter, dead_letter_event(lost.to_bytes())).status_code == 200  # dead-lettered twice
    assert post_event(dead_letter, dead_letter_event(first.to_bytes())).status_code == 200  # already classified
    status = client("job_status").get(f"/classification-job/{job['id']}").get_json()
    assert (status["processed"], status["failed"], status["complete"]) == (1, 1, True)
    reasons = {r.name: r.reason for r in service.jobs.results(job["id"])}
    assert reasons == {first.name: "", lost.name: "gave up after 10 deliveries"}


def test_a_storage_notification_pubsub_gave_up_on_fails_the_object_in_its_watch_jobs(service):
    job = client("create_job").post("/", json={"classes": ["tabby"], "watch": True}).get_json()
    upload(service, **{"late.jpg": "red"})  # uploaded after the listing; its notification was given up on
    event = dead_letter_event(b"{}", eventType="OBJECT_FINALIZE", bucketId="images", objectId="all/late.jpg")
    assert post_event(client("dead_letter", "cloudevent"), event).status_code == 200
    assert [(r.name, r.reason) for r in service.jobs.results(job["id"])] == [
        ("all/late.jpg", "gave up after 10 deliveries of its storage notification")]
    outside = dead_letter_event(b"{}", eventType="OBJECT_FINALIZE", bucketId="images", objectId="elsewhere/x.jpg")
    post_event(client("dead_letter", "cloudevent"), outside)
    assert len(list(service.jobs.results(job["id"]))) == 1


def test_a_forged_dead_letter_counts_nothing(service):
    import dataclasses

    upload(service, **{"a.jpg": "red"})
    job = client("create_job").post("/", json={"classes": ["tabby"]}).get_json()
    [genuine] = service.publisher.messages
    for forged in (dataclasses.replace(genuine, job_id="d" * 32), dataclasses.replace(genuine, name="other/a.jpg")):
        assert post_event(client("dead_letter", "cloudevent"), dead_letter_event(forged.to_bytes())).status_code == 200
    assert list(service.jobs.results(job["id"])) == []
