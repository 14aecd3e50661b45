"""The API Gateway config (OpenAPI 2.0, which API Gateway takes) for the one base URL of the deployed service:
every route of the route table (common/routes.py) forwarded to the function that serves it, with the path
appended, as the emulated gateway forwards them. deploy.sh writes it and creates the gateway from it.

  python3 -m imgclassify.gateway_config --project P --region R > build/gateway.yaml
"""
from __future__ import annotations

import argparse
import sys

from common.routes import ROUTES, Function

# Gen2 functions also answer on https://REGION-PROJECT.cloudfunctions.net/NAME: known before they are deployed.
DEPLOYED_NAMES = {Function.CREATE_JOB: "create-job", Function.JOB_STATUS: "job-status"}


def function_url(function: Function, project: str, region: str) -> str:
    return f"https://{region}-{project}.cloudfunctions.net/{DEPLOYED_NAMES[function]}"


def gateway_config(project: str, region: str) -> str:
    """YAML text (written by hand: the structure is small and fixed, and no YAML writer is needed at deploy)."""
    paths: dict[str, list[str]] = {}
    for route in ROUTES:
        if route.function not in DEPLOYED_NAMES:
            continue  # the embedded server's index
        path = route.template.replace("<id>", "{id}")
        lines = paths.setdefault(path, [])
        lines += [f"    {route.method.lower()}:",
                  f"      operationId: {route.action.value}Job",
                  "      x-google-backend:",
                  f"        address: {function_url(route.function, project, region)}",
                  "        path_translation: APPEND_PATH_TO_ADDRESS",
                  "        deadline: 540.0" if route.function == Function.CREATE_JOB else "        deadline: 30.0",
                  *(["      parameters:", "        - {name: id, in: path, required: true, type: string}"]
                    if "{id}" in path else []),
                  "      responses:", "        default: {description: JSON (errors included)}"]
    body = ["swagger: '2.0'", "info:", "  title: imgclassify", "  version: 1.0.0",
            "  description: The old service's paths on one base URL, forwarded to the functions.",
            "schemes: [https]", "produces: [application/json]", "paths:"]
    for path, lines in paths.items():
        body += [f"  {path}:", *lines]
    return "\n".join(body) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", required=True)
    parser.add_argument("--region", required=True)
    args = parser.parse_args(argv)
    sys.stdout.write(gateway_config(args.project, args.region))
    return 0


if __name__ == "__main__":
    sys.exit(main())
