"""deploy.sh --delete and --delete-data against the recording stand-in `gcloud`: what it removes, what it keeps
(data unless asked, anything it did not create), and how it asks before deleting data."""
from __future__ import annotations

import os

import pytest

from tests import deploy_support
from tests.deploy_support import find, flag, CREATED_BY_DEPLOY, UPLOADER_SA


@pytest.fixture
def fake_gcloud(tmp_path):
    return deploy_support.fake_gcloud(tmp_path)


def test_delete_removes_what_deploy_created_and_keeps_the_data_unless_asked(fake_gcloud):
    result, calls = fake_gcloud("--project", "proj", "--delete", existing=True)
    assert result.returncode == 0, result.stderr
    assert not [c for c in calls if "create" in c[:4] or c[:2] == ["functions", "deploy"]]
    assert {c[2] for c in find(calls, "functions", "delete")} == {
        "create-job", "job-status", "classify-image", "object-arrived", "dead-letter"}
    assert {c[3] for c in find(calls, "pubsub", "topics", "delete")} == {
        "classify-image", "classify-image-dead-letter", "classify-image-uploads", "job-events"}
    assert [c[4] for c in find(calls, "storage", "buckets", "notifications", "delete")] == [
        "gs://proj-images/notificationConfigs/1"]  # the one on the uploads topic, read from --format=json
    assert len({c[3] for c in find(calls, "iam", "service-accounts", "delete")}) == 9  # the uploader's too
    assert find(calls, "api-gateway", "gateways", "delete") and find(calls, "api-gateway", "apis", "delete")
    assert [c[3] for c in find(calls, "api-gateway", "api-configs", "delete")] == ["imgclassify-0123"]
    assert find(calls, "projects", "remove-iam-policy-binding")
    assert not find(calls, "storage", "rm") and not find(calls, "firestore", "databases", "delete")
    assert "are kept" in result.stdout

    with_data, calls = fake_gcloud("--project", "proj", "--delete-data", "--yes", existing=True,
                                   FAKE_BUCKET_LABELS=CREATED_BY_DEPLOY)
    assert with_data.returncode == 0 and find(calls, "storage", "rm") and find(calls, "firestore", "databases",
                                                                                   "delete")
    dry, calls = fake_gcloud("--project", "proj", "--delete", "--dry-run")
    assert dry.returncode == 0 and calls == [] and dry.stdout.count("+ gcloud functions delete") == 5
    assert "nothing was deleted" in dry.stdout


def _deleted(calls) -> list[list[str]]:
    return [c for c in calls if "delete" in c[:4] or c[:2] == ["storage", "rm"] or "remove-iam-policy-binding" in c]


def test_delete_data_lists_what_it_deletes_and_without_a_terminal_needs_yes(fake_gcloud):
    refused, calls = fake_gcloud("--project", "proj", "--delete-data", existing=True,
                                 FAKE_BUCKET_LABELS=CREATED_BY_DEPLOY)
    assert refused.returncode == 1 and "--yes" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert _deleted(calls) == []
    for listed in ("create-job job-status classify-image object-arrived dead-letter", "9 service accounts",
                   "classify-image-dead-letter-hold", "the bucket gs://proj-images with every photo",
                   "the Firestore database (default) with every job"):
        assert listed in refused.stdout, listed


def test_delete_data_on_a_terminal_asks_and_deletes_only_on_yes(fake_gcloud):
    import pty

    for answer, deletes in (("no", False), ("yes", True)):
        leader, follower = pty.openpty()
        try:
            os.write(leader, f"{answer}\n".encode())  # typed ahead: read(1) takes the line once it asks
            result, calls = fake_gcloud("--project", "proj", "--delete-data", existing=True, stdin=follower,
                                        FAKE_BUCKET_LABELS=CREATED_BY_DEPLOY)
        finally:
            os.close(leader)
            os.close(follower)
        assert "Type yes to confirm" in result.stderr
        assert (result.returncode == 0) == deletes and bool(_deleted(calls)) == deletes
        assert bool(find(calls, "storage", "rm")) == deletes


def test_delete_data_never_deletes_a_bucket_or_database_it_did_not_create(fake_gcloud):
    kept, calls = fake_gcloud("--project", "proj", "--delete-data", existing=True)  # no labels: nothing to ask
    assert kept.returncode == 0, kept.stderr
    assert not find(calls, "storage", "rm") and not find(calls, "firestore", "databases", "delete")
    assert "kept: the bucket gs://proj-images" in kept.stdout and "did not create it" in kept.stdout
    assert find(calls, "functions", "delete")  # the rest of the teardown still runs

    # The database only (the bucket was the user's): the database goes, the bucket stays without the label.
    database, calls = fake_gcloud("--project", "proj", "--delete-data", "--yes", existing=True,
                                  FAKE_BUCKET_LABELS='"imgclassify-created-database": "true"')
    assert database.returncode == 0 and find(calls, "firestore", "databases", "delete")
    assert not find(calls, "storage", "rm")
    [unlabel] = find(calls, "storage", "buckets", "update")
    assert flag(unlabel, "--remove-labels") == ["imgclassify-created-database"]


def test_delete_removes_the_downloader_uploader_and_its_bucket_role(fake_gcloud):
    result, calls = fake_gcloud("--project", "proj", "--delete", existing=True)
    assert result.returncode == 0, result.stderr
    [deleted] = find(calls, "run", "services", "delete")
    assert deleted[3] == "downloader-uploader" and flag(deleted, "--region") == ["us-central1"]
    assert UPLOADER_SA in {
        c[3] for c in find(calls, "iam", "service-accounts", "delete")}
    removed = {(flag(c, "--member")[0], flag(c, "--role")[0])
               for c in find(calls, "storage", "buckets", "remove-iam-policy-binding", "gs://proj-images")}
    assert (f"serviceAccount:{UPLOADER_SA}", "roles/storage.objectUser") in removed  # the bucket is kept
    # before its account goes: a binding of a deleted account can only be removed by its deleted: name
    last_binding = max(i for i, c in enumerate(calls) if "remove-iam-policy-binding" in c)
    assert last_binding < min(i for i, c in enumerate(calls) if c[:3] == ["iam", "service-accounts", "delete"])
    assert "the Cloud Run service downloader-uploader" in result.stdout
    dry, calls = fake_gcloud("--project", "proj", "--delete", "--dry-run")
    assert calls == [] and "+ gcloud run services delete downloader-uploader" in dry.stdout

