"""The cloud's adapters, each made from the settings (and the one Firestore or Pub/Sub client they share). Imported
only when a cloud port is first used: the SDKs load then."""
from __future__ import annotations

from typing import TYPE_CHECKING

from common.config import Settings

if TYPE_CHECKING:
    from google.cloud import firestore as firestore_sdk
    from google.cloud import pubsub_v1

    from common.adapters.gcp import FirestoreJobStore, GcsObjectStore, PubSubEvents, PubSubPublisher
    from common.adapters.gcp_predictions import FirestorePredictionStore
    from common.adapters.gcp_corrections import FirestoreCorrections


def firestore_client(settings: Settings) -> firestore_sdk.Client:
    from google.cloud import firestore

    return firestore.Client(project=settings.project)


def pubsub_client() -> pubsub_v1.PublisherClient:
    from common.adapters.gcp import PubSubPublisher

    return PubSubPublisher.make_client()


def objects(settings: Settings) -> GcsObjectStore:
    from common.adapters.gcp import GcsObjectStore, storage_client

    return GcsObjectStore(storage_client(settings.project))


def jobs(client: firestore_sdk.Client, settings: Settings) -> FirestoreJobStore:
    from common.adapters.gcp import FirestoreJobStore

    return FirestoreJobStore(client, settings.jobs_collection, settings.counter_shards)


def predictions(client: firestore_sdk.Client, settings: Settings) -> FirestorePredictionStore:
    from common.adapters.gcp_predictions import FirestorePredictionStore

    return FirestorePredictionStore(client, settings.predictions_collection)


def corrections(client: firestore_sdk.Client) -> FirestoreCorrections:
    from common.adapters.gcp_corrections import FirestoreCorrections

    return FirestoreCorrections(client)


def publisher(client: pubsub_v1.PublisherClient, settings: Settings) -> PubSubPublisher:
    from common.adapters.gcp import PubSubPublisher

    return PubSubPublisher(client, client.topic_path(settings.project, settings.topic))


def events(client: pubsub_v1.PublisherClient, settings: Settings) -> PubSubEvents:
    from common.adapters.gcp import PubSubEvents

    return PubSubEvents(client, client.topic_path(settings.project, settings.job_events_topic))
