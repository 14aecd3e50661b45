#!/usr/bin/env bash
# Deploy the image classification service to Google Cloud (Cloud Functions gen2, Pub/Sub, Firestore, Storage).
# Idempotent: every resource is created only when missing; functions are redeployed in place.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: ./deploy.sh [options]

Deploys create_job, job_status (HTTP) and classify_image (Pub/Sub) as Cloud Functions gen2.

Options (environment variable in brackets):
  --project ID            GCP project              [GOOGLE_CLOUD_PROJECT, else gcloud's configured project]
  --region REGION         functions region         [REGION, default us-central1]
  --bucket NAME           photo bucket (all/ inside) [BUCKET, default <project>-images]
  --model NAME            resnet50 | mobilenet_v2  [MODEL, default resnet50]
  --weights PATH          local weights file (.weights.h5/.h5/.tflite), uploaded to gs://<bucket>/models/
                          [MODEL_WEIGHTS_FILE]; or --weights-uri gs://... for weights already in Storage
  --weights-uri URI       [MODEL_WEIGHTS]
  --build-litert PHOTOS   compile --weights (Keras) to LiteRT, calibrated and accuracy-guarded on these photos
                          (half calibrate, half guard); deploys the int8 build if it passed the guard, else fp32,
                          and classify_image then ships without TensorFlow
  --topic NAME            fan-out topic            [CLASSIFY_TOPIC, default classify-image]
  --max-instances N       classify_image instances [MAX_INSTANCES, default 20]
  --allow-unauthenticated make the HTTP functions public (default: IAM-authenticated callers only)
  --service-key-secret S  Secret Manager secret holding the old clients' shared key: the HTTP functions then
                          require it in the Authorization header (SERVICE_KEY, mounted with --set-secrets)
  --dry-run               print every gcloud command, run none
  -h, --help              this text

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
TOPIC=${CLASSIFY_TOPIC:-classify-image}
MAX_INSTANCES=${MAX_INSTANCES:-20}
PUBLIC=false
DRY_RUN=false
LITERT_PHOTOS=
SERVICE_KEY_SECRET=

while (($#)); do
  case $1 in
    --project) PROJECT=$2; shift 2 ;;
    --region) REGION=$2; shift 2 ;;
    --bucket) BUCKET=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --weights) WEIGHTS_FILE=$2; shift 2 ;;
    --weights-uri) WEIGHTS_URI=$2; shift 2 ;;
    --topic) TOPIC=$2; shift 2 ;;
    --max-instances) MAX_INSTANCES=$2; shift 2 ;;
    --allow-unauthenticated) PUBLIC=true; shift ;;
    --build-litert) LITERT_PHOTOS=$2; shift 2 ;;
    --service-key-secret) SERVICE_KEY_SECRET=$2; shift 2 ;;
    --dry-run) DRY_RUN=true; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "deploy.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "deploy.sh: $*" >&2; exit 1; }

HERE=$(cd "$(dirname "$0")" && pwd)
# The valid models come from the one definition the service validates against (common/domain/options.py).
MODELS=$(PYTHONPATH="$HERE" python3 -m common.domain.options model) || die "cannot read the model list"
[[ " $MODELS " == *" $MODEL "* ]] || die "unknown model '$MODEL': use one of $MODELS"
if [[ -z $PROJECT ]]; then
  if $DRY_RUN; then PROJECT=PROJECT_ID; else PROJECT=$(gcloud config get-value project 2>/dev/null); fi
fi
[[ -n $PROJECT ]] || die "no project: pass --project or set GOOGLE_CLOUD_PROJECT"
BUCKET=${BUCKET:-$PROJECT-images}
DEAD_LETTER_TOPIC=$TOPIC-dead-letter
if [[ -z $WEIGHTS_URI && -z $WEIGHTS_FILE ]]; then
  die "no model weights: pass --weights PATH (uploaded to gs://$BUCKET/models/) or --weights-uri gs://..."
fi
if [[ -n $LITERT_PHOTOS ]]; then
  [[ -n $WEIGHTS_FILE && -f $WEIGHTS_FILE ]] || die "--build-litert needs --weights PATH (a Keras weights file)"
  [[ -d $LITERT_PHOTOS ]] || die "photo folder not found: $LITERT_PHOTOS"
  build=("$HERE/.venv/bin/python" "$HERE/tools/build_tflite.py" --model "$MODEL" --weights "$WEIGHTS_FILE"
         --calibration "$LITERT_PHOTOS" --guard "$LITERT_PHOTOS" --out "$HERE/build/models")
  printf '+'; printf ' %q' "${build[@]}"; printf '\n'
  if $DRY_RUN; then
    WEIGHTS_FILE="$HERE/build/models/$MODEL-DRYRUN-fp32.tflite"
  else
    report=$("${build[@]}") || die "LiteRT build failed"
    WEIGHTS_FILE=$(printf '%s' "$report" | "$HERE/.venv/bin/python" -c '
import json, sys
built = json.load(sys.stdin)
accepted = [built[k] for k in ("int8", "int8-mixed", "fp32") if built.get(k, {}).get("accepted")]
print(accepted[0]["path"] if accepted else "")')
    [[ -n $WEIGHTS_FILE ]] || die "no LiteRT build passed the accuracy guard; deploy the Keras weights instead"
  fi
  echo "== LiteRT artifact: $WEIGHTS_FILE"
fi
DRY_RUN_ARTIFACT=false
$DRY_RUN && [[ -n $LITERT_PHOTOS ]] && DRY_RUN_ARTIFACT=true  # a dry run builds nothing: the path is a placeholder
if [[ -n $WEIGHTS_FILE ]] && ! $DRY_RUN_ARTIFACT; then
  [[ -f $WEIGHTS_FILE ]] || die "weights file not found: $WEIGHTS_FILE"
fi
if [[ -n $WEIGHTS_FILE ]]; then
  # Content-addressed name: new weights never overwrite the ones running instances have cached.
  digest=$( { sha256sum "$WEIGHTS_FILE" 2>/dev/null || echo DRYRUN000000; } | cut -c1-12)
  WEIGHTS_URI="gs://$BUCKET/models/$digest-$(basename "$WEIGHTS_FILE")"
fi
RUNTIME_KIND=keras
[[ $WEIGHTS_URI == *.tflite ]] && RUNTIME_KIND=litert

STAGE=$HERE/build/deploy

run() {
  # Print every cloud command; run it unless this is a dry run.
  printf '+'; printf ' %q' "$@"; printf '\n'
  $DRY_RUN || "$@"
}

exists() {
  # True when a describe succeeds. A dry run assumes nothing exists, so it prints every create.
  $DRY_RUN && { printf '+'; printf ' %q' "$@"; printf '   # (dry run: assumed missing)\n'; return 1; }
  "$@" >/dev/null 2>&1
}

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
if [[ $RUNTIME_KIND == litert ]]; then
  stage classify_image "${BASE_PACKAGES[@]}" pillow-heif ai-edge-litert
else
  stage classify_image "${BASE_PACKAGES[@]}" pillow-heif tensorflow-cpu
fi

echo "== project $PROJECT, region $REGION, bucket gs://$BUCKET, model $MODEL ($RUNTIME_KIND, $WEIGHTS_URI)"

run gcloud services enable cloudfunctions.googleapis.com run.googleapis.com cloudbuild.googleapis.com \
  artifactregistry.googleapis.com eventarc.googleapis.com pubsub.googleapis.com firestore.googleapis.com \
  storage.googleapis.com --project "$PROJECT"

exists gcloud firestore databases describe --database="(default)" --project "$PROJECT" ||
  run gcloud firestore databases create --location="$REGION" --project "$PROJECT"

exists gcloud storage buckets describe "gs://$BUCKET" --project "$PROJECT" ||
  run gcloud storage buckets create "gs://$BUCKET" --location="$REGION" --uniform-bucket-level-access \
    --project "$PROJECT"

exists gcloud pubsub topics describe "$TOPIC" --project "$PROJECT" ||
  run gcloud pubsub topics create "$TOPIC" --project "$PROJECT"
exists gcloud pubsub topics describe "$DEAD_LETTER_TOPIC" --project "$PROJECT" ||
  run gcloud pubsub topics create "$DEAD_LETTER_TOPIC" --project "$PROJECT"
# Messages published to a topic without subscriptions are lost: keep dead letters for 7 days for inspection.
exists gcloud pubsub subscriptions describe "$DEAD_LETTER_TOPIC-hold" --project "$PROJECT" ||
  run gcloud pubsub subscriptions create "$DEAD_LETTER_TOPIC-hold" --topic="$DEAD_LETTER_TOPIC" \
    --message-retention-duration=7d --project "$PROJECT"

if [[ -n $WEIGHTS_FILE ]]; then
  exists gcloud storage objects describe "$WEIGHTS_URI" --project "$PROJECT" ||
    run gcloud storage cp "$WEIGHTS_FILE" "$WEIGHTS_URI" --project "$PROJECT"
fi

AUTH_FLAG=--no-allow-unauthenticated
$PUBLIC && AUTH_FLAG=--allow-unauthenticated
HTTP_SECRETS=()
[[ -n $SERVICE_KEY_SECRET ]] && HTTP_SECRETS=(--set-secrets "SERVICE_KEY=$SERVICE_KEY_SECRET:latest")
COMMON_ENV="GOOGLE_CLOUD_PROJECT=$PROJECT,BUCKET=$BUCKET,CLASSIFY_TOPIC=$TOPIC,MODEL=$MODEL,MODEL_WEIGHTS=$WEIGHTS_URI"
COMMON_ENV+=",MODEL_RUNTIME=$RUNTIME_KIND"

# create_job lists the whole prefix and waits for every publish: long timeout, modest memory.
run gcloud functions deploy create-job --gen2 --project "$PROJECT" --region "$REGION" --runtime python311 \
  --source "$STAGE/create_job" --entry-point create_job --trigger-http "$AUTH_FLAG" \
  --memory 512Mi --cpu 1 --timeout 540s --concurrency 20 --max-instances 10 --set-env-vars "$COMMON_ENV" \
  ${HTTP_SECRETS[@]+"${HTTP_SECRETS[@]}"}

# job_status is a few document reads: small, highly concurrent.
run gcloud functions deploy job-status --gen2 --project "$PROJECT" --region "$REGION" --runtime python311 \
  --source "$STAGE/job_status" --entry-point job_status --trigger-http "$AUTH_FLAG" \
  --memory 256Mi --cpu 1 --timeout 30s --concurrency 80 --max-instances 10 --set-env-vars "$COMMON_ENV" \
  ${HTTP_SECRETS[@]+"${HTTP_SECRETS[@]}"}

# classify_image holds the model in memory (ResNet50 under TensorFlow: ~1 GB resident); 2 vCPUs serve a few
# concurrent deliveries; --retry makes a raised error a redelivery (transient failures only, see README).
run gcloud functions deploy classify-image --gen2 --project "$PROJECT" --region "$REGION" --runtime python311 \
  --source "$STAGE/classify_image" --entry-point classify_image --trigger-topic "$TOPIC" --retry \
  --memory 2Gi --cpu 2 --timeout 120s --concurrency 4 --max-instances "$MAX_INSTANCES" \
  --set-env-vars "$COMMON_ENV"

# Eventarc made a push subscription for the trigger: give it a dead-letter topic and a delivery cap.
if $DRY_RUN; then
  PROJECT_NUMBER=PROJECT_NUMBER
  SUBSCRIPTION=EVENTARC_SUBSCRIPTION
  printf '+ gcloud projects describe %q --format=value(projectNumber)\n' "$PROJECT"
  printf '+ gcloud functions describe classify-image --gen2 --region %q --format=value(eventTrigger.trigger)\n' "$REGION"
  printf '+ gcloud eventarc triggers describe TRIGGER --location %q --format=value(transport.pubsub.subscription)\n' "$REGION"
else
  PROJECT_NUMBER=$(gcloud projects describe "$PROJECT" --format='value(projectNumber)')
  TRIGGER=$(gcloud functions describe classify-image --gen2 --project "$PROJECT" --region "$REGION" \
    --format='value(eventTrigger.trigger)')
  SUBSCRIPTION=$(gcloud eventarc triggers describe "${TRIGGER##*/}" --project "$PROJECT" --location "$REGION" \
    --format='value(transport.pubsub.subscription)')
fi
PUBSUB_AGENT="serviceAccount:service-$PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com"
run gcloud pubsub subscriptions update "$SUBSCRIPTION" --project "$PROJECT" \
  --dead-letter-topic="$DEAD_LETTER_TOPIC" --max-delivery-attempts=10 --ack-deadline=120 \
  --min-retry-delay=10s --max-retry-delay=600s
run gcloud pubsub topics add-iam-policy-binding "$DEAD_LETTER_TOPIC" --project "$PROJECT" \
  --member="$PUBSUB_AGENT" --role=roles/pubsub.publisher
run gcloud pubsub subscriptions add-iam-policy-binding "$SUBSCRIPTION" --project "$PROJECT" \
  --member="$PUBSUB_AGENT" --role=roles/pubsub.subscriber

echo "== deployed"
for fn in create-job job-status; do
  if $DRY_RUN; then
    printf '+ gcloud functions describe %s --gen2 --region %q --format=value(serviceConfig.uri)\n' "$fn" "$REGION"
  else
    printf '%s: %s\n' "$fn" "$(gcloud functions describe "$fn" --gen2 --project "$PROJECT" --region "$REGION" \
      --format='value(serviceConfig.uri)')"
  fi
done
