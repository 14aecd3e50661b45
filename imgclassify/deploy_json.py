"""deploy.sh's readers of JSON (what gcloud and tools/build_tflite.py print), one `python -m` command each, reading
standard input:

  gcloud storage buckets notifications list gs://B --format=json | python -m imgclassify.deploy_json notifications T
      the ids of the bucket's notifications on topic T, one a line
  gcloud storage buckets describe gs://B --format=json | python -m imgclassify.deploy_json label KEY
      the bucket's label KEY ("" when it has none); a Cloud Run service's too (gcloud run services describe)
  tools/build_tflite.py ... | python -m imgclassify.deploy_json accepted-build
      the path of the first build that passed the accuracy guard (int8, then int8-mixed, then fp32), its guard's
      figures on standard error; nothing when none passed
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any


def notification_ids(listed: Any, topic: str) -> list[str]:
    """Each listed configuration nests its topic under "Notification Configuration" (gcloud 528's list.py); the
    topic's full name ends the string."""
    found = []
    for entry in listed or []:
        config = entry.get("Notification Configuration", entry)
        if str(config.get("topic", "")).endswith(f"/topics/{topic}") and config.get("id"):
            found.append(str(config["id"]))
    return found


def label(resource: Any, key: str) -> str:
    """A bucket keeps its labels at the top; a Cloud Run service (gcloud prints the v1 resource) in its metadata."""
    resource = resource or {}
    labels = resource.get("labels") or (resource.get("metadata") or {}).get("labels") or {}
    return str(labels.get(key, ""))


BUILD_KINDS = ("int8", "int8-mixed", "fp32")  # the most compact first


def accepted_build(report: Any) -> tuple[str, str] | None:
    """(path, what its guard measured) of the first build that passed, None when none did."""
    for kind in BUILD_KINDS:
        built = report.get(kind) or {}
        if built.get("accepted"):
            guard = built["guard"]
            return built["path"], (f"{kind} passed the accuracy guard (top-1 agreement {guard['top1_agreement']}, "
                                   f"decisions {guard['decision_agreement']}, {guard['images']} photos)")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imgclassify.deploy_json", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_subparsers(dest="what", required=True)
    what.add_parser("notifications").add_argument("topic")
    what.add_parser("label").add_argument("key")
    what.add_parser("accepted-build")
    args = parser.parse_args(argv)
    text = sys.stdin.read()
    document = json.loads(text) if text.strip() else None
    if args.what == "notifications":
        print("\n".join(notification_ids(document, args.topic)))
    elif args.what == "label":
        print(label(document, args.key))
    else:
        accepted = accepted_build(document or {})
        if accepted is None:
            print("no LiteRT build passed the accuracy guard", file=sys.stderr)
            return 0
        print(accepted[1], file=sys.stderr)
        print(accepted[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
