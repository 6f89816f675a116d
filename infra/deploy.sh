#!/usr/bin/env bash
# Deploys the whole product into one resource group, from an empty subscription to a running app:
#   infra        the UI's Entra app registration (sign-in), then Bicep: storage, VNet, Function app,
#                web UI, Event Grid topic, AML workspace, AKS + AzureML extension, compute attach,
#                role assignments (az deployment group create)
#   image        the job/scoring image: az acr build of aks_jobs/Dockerfile
#   environment  AML environment gpt2-pdf-jobs (what azureml:gpt2-pdf-jobs@latest resolves to)
#   k8s          AML instance types on the cluster (az aks get-credentials + kubectl apply)
#   function     the Function app code (func azure functionapp publish)
#   ui           the web UI's code (az webapp deploy) and its sign-in redirect URI
#   events       Event Grid subscription: BlobCreated/BlobDeleted under inputs/ -> the Event Grid trigger's
#                webhook (needs the eventgrid_extension key, which exists only after publish)
# Every step is idempotent; rerun the script (or some steps with --steps) after any change.
# Guide: docs/deploy.md.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: infra/deploy.sh -g RESOURCE_GROUP [-l LOCATION] [options]

  -g, --resource-group NAME   resource group to deploy into (env RESOURCE_GROUP); created if missing
  -l, --location REGION       region for a new resource group (env LOCATION)
  -s, --subscription ID       subscription to use (env SUBSCRIPTION; default: az's current one)
  -p, --parameters FILE       Bicep parameters file (env PARAMETERS_FILE; default infra/main.parameters.json)
      --set NAME=VALUE        override one Bicep parameter (repeatable), e.g. --set gpuPoolMaxCount=2
  -t, --image-tag TAG         image tag and AML environment version (env IMAGE_TAG; default: git commit)
      --steps LIST            comma-separated subset of: infra,image,environment,k8s,function,ui,events
  -h, --help                  this text

Other environment: DEPLOYMENT_NAME (gpt2-pdf), IMAGE_REPOSITORY (gpt2-pdf-jobs), TORCH_INDEX_URL (build
arg, see aks_jobs/Dockerfile), DEPLOYER_PRINCIPAL_ID / DEPLOYER_PRINCIPAL_TYPE (default: the signed-in
az identity), BLOB_FUNCTION_NAME (default: the app's only Event Grid-triggered function),
EVENT_SUBSCRIPTION_NAME (inputs-blob-created), UI_APP_REGISTRATION (display name of the UI's Entra app
registration; default gpt2-pdf-ui-<resource group>).
EOF
}

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ALL_STEPS="infra,image,environment,k8s,function,ui,events"

RESOURCE_GROUP="${RESOURCE_GROUP:-}"
LOCATION="${LOCATION:-}"
SUBSCRIPTION="${SUBSCRIPTION:-}"
PARAMETERS_FILE="${PARAMETERS_FILE:-$REPO_ROOT/infra/main.parameters.json}"
IMAGE_TAG="${IMAGE_TAG:-}"
STEPS="${STEPS:-$ALL_STEPS}"
DEPLOYMENT_NAME="${DEPLOYMENT_NAME:-gpt2-pdf}"
IMAGE_REPOSITORY="${IMAGE_REPOSITORY:-gpt2-pdf-jobs}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-}"
DEPLOYER_PRINCIPAL_ID="${DEPLOYER_PRINCIPAL_ID:-}"
DEPLOYER_PRINCIPAL_TYPE="${DEPLOYER_PRINCIPAL_TYPE:-}"
BLOB_FUNCTION_NAME="${BLOB_FUNCTION_NAME:-}"
EVENT_SUBSCRIPTION_NAME="${EVENT_SUBSCRIPTION_NAME:-inputs-blob-created}"
UI_APP_REGISTRATION="${UI_APP_REGISTRATION:-}"
PARAMETER_OVERRIDES=()

log() { printf '[deploy %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf 'deploy.sh: %s\n' "$*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    -g|--resource-group) RESOURCE_GROUP="${2:?$1 needs a value}"; shift 2 ;;
    -l|--location) LOCATION="${2:?$1 needs a value}"; shift 2 ;;
    -s|--subscription) SUBSCRIPTION="${2:?$1 needs a value}"; shift 2 ;;
    -p|--parameters) PARAMETERS_FILE="${2:?$1 needs a value}"; shift 2 ;;
    --set) PARAMETER_OVERRIDES+=("${2:?$1 needs NAME=VALUE}"); shift 2 ;;
    -t|--image-tag) IMAGE_TAG="${2:?$1 needs a value}"; shift 2 ;;
    --steps) STEPS="${2:?$1 needs a value}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done

[[ -n "$RESOURCE_GROUP" ]] || die "no resource group: pass -g NAME or set RESOURCE_GROUP"
UI_APP_REGISTRATION="${UI_APP_REGISTRATION:-gpt2-pdf-ui-$RESOURCE_GROUP}"
[[ -f "$PARAMETERS_FILE" ]] || die "parameters file '$PARAMETERS_FILE' not found (-p FILE)"
IFS=',' read -r -a SELECTED_STEPS <<< "$STEPS"
for step in "${SELECTED_STEPS[@]}"; do
  [[ ",$ALL_STEPS," == *",$step,"* ]] || die "unknown step '$step' in --steps (known: $ALL_STEPS)"
done

wants() { [[ ",$STEPS," == *",$1,"* ]]; }

# retry ATTEMPTS DELAY_SECONDS COMMAND...: for what Azure makes eventually consistent
# (role assignments, a freshly published host's keys).
retry() {
  local attempts="$1" delay="$2" n=1
  shift 2
  until "$@"; do
    (( n >= attempts )) && return 1
    log "retrying in ${delay}s ($n/$attempts): $1 $2 ..."
    sleep "$delay"
    n=$((n + 1))
  done
}

require_tools() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' is not installed (prerequisites: docs/deploy.md)"
  done
}

# A Bicep output of this deployment (a plain string).
output() {
  az deployment group show --resource-group "$RESOURCE_GROUP" --name "$DEPLOYMENT_NAME" \
    --query "properties.outputs.$1.value" --output tsv
}

default_image_tag() {
  local commit
  if commit="$(git -C "$REPO_ROOT" rev-parse --short=12 HEAD 2>/dev/null)"; then
    # Uncommitted changes get their own tag, so an environment version never names two images.
    if [[ -n "$(git -C "$REPO_ROOT" status --porcelain -- aks_jobs pipeline_contracts pyproject.toml constraints.txt 2>/dev/null)" ]]; then
      commit="$commit-$(date -u +%Y%m%d%H%M%S)"
    fi
    printf '%s' "$commit"
  else
    date -u +%Y%m%d%H%M%S
  fi
}

resolve_deployer() {
  [[ -n "$DEPLOYER_PRINCIPAL_ID" ]] && { DEPLOYER_PRINCIPAL_TYPE="${DEPLOYER_PRINCIPAL_TYPE:-User}"; return; }
  if [[ "$(az account show --query user.type --output tsv)" == "user" ]]; then
    DEPLOYER_PRINCIPAL_ID="$(az ad signed-in-user show --query id --output tsv)"
    DEPLOYER_PRINCIPAL_TYPE=User
  else
    DEPLOYER_PRINCIPAL_ID="$(az ad sp show --id "$(az account show --query user.name --output tsv)" --query id --output tsv)"
    DEPLOYER_PRINCIPAL_TYPE=ServicePrincipal
  fi
}

step_infra() {
  local providers=(Microsoft.ContainerService Microsoft.KubernetesConfiguration Microsoft.MachineLearningServices
    Microsoft.EventGrid Microsoft.Web Microsoft.Storage Microsoft.KeyVault Microsoft.ContainerRegistry
    Microsoft.OperationalInsights Microsoft.Insights Microsoft.ManagedIdentity)
  local provider
  log "registering resource providers (no-op when already registered)"
  for provider in "${providers[@]}"; do
    az provider register --namespace "$provider" --wait --output none
  done

  if ! az group show --name "$RESOURCE_GROUP" --output none 2>/dev/null; then
    [[ -n "$LOCATION" ]] || die "resource group '$RESOURCE_GROUP' does not exist: pass -l REGION to create it"
    log "creating resource group $RESOURCE_GROUP in $LOCATION"
    az group create --name "$RESOURCE_GROUP" --location "$LOCATION" --output none
  fi

  resolve_deployer
  local ui_client_id
  ui_client_id="$(ui_app_registration)"
  if [[ -z "$ui_client_id" ]]; then
    log "creating the Entra app registration $UI_APP_REGISTRATION (UI sign-in)"
    ui_client_id="$(az ad app create --display-name "$UI_APP_REGISTRATION" --sign-in-audience AzureADMyOrg \
      --enable-id-token-issuance true --query appId --output tsv)"
  fi
  log "deploying infra/main.bicep (first run: 20-40 minutes, mostly AKS and the AzureML extension)"
  az deployment group create --resource-group "$RESOURCE_GROUP" --name "$DEPLOYMENT_NAME" \
    --template-file "$REPO_ROOT/infra/main.bicep" --parameters "@$PARAMETERS_FILE" \
    --parameters "deployerPrincipalId=$DEPLOYER_PRINCIPAL_ID" "deployerPrincipalType=$DEPLOYER_PRINCIPAL_TYPE" \
      "uiAuthClientId=$ui_client_id" \
    ${PARAMETER_OVERRIDES[@]+"${PARAMETER_OVERRIDES[@]}"} --output none
}

step_image() {
  local registry context="$WORK_DIR/image-context"
  registry="$(output registryName)"
  # Upload only what the Dockerfile uses (aks_jobs/, pipeline_contracts/, pyproject.toml, constraints.txt, laid
  # out as in the repo),
  # not the checkout with its virtual environments.
  rm -rf "$context" && mkdir -p "$context"
  tar -C "$REPO_ROOT" --exclude='__pycache__' --exclude='*.pyc' -cf - aks_jobs pipeline_contracts pyproject.toml constraints.txt \
    | tar -C "$context" -xf -
  log "building $IMAGE_REPOSITORY:$IMAGE_TAG in $registry (ACR Tasks, no local Docker needed)"
  # az opens --file from the current folder, not from the context (Azure/azure-cli acr/_archive_utils.py,
  # _pack_source_code): an absolute path inside the context works from wherever this script is run.
  az acr build --registry "$registry" --image "$IMAGE_REPOSITORY:$IMAGE_TAG" \
    --file "$context/aks_jobs/Dockerfile" --build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL" "$context"
}

step_environment() {
  local workspace image environment_name
  workspace="$(output workspaceName)"
  image="$(output registryLoginServer)/$IMAGE_REPOSITORY:$IMAGE_TAG"
  environment_name="$(sed -n 's/^name:[[:space:]]*//p' "$REPO_ROOT/aks_jobs/environment.yml")"
  if az ml environment show --resource-group "$RESOURCE_GROUP" --workspace-name "$workspace" \
      --name "$environment_name" --version "$IMAGE_TAG" --output none 2>/dev/null; then
    log "environment $environment_name:$IMAGE_TAG already registered"
    return
  fi
  log "registering environment $environment_name:$IMAGE_TAG -> $image"
  az ml environment create --resource-group "$RESOURCE_GROUP" --workspace-name "$workspace" \
    --file "$REPO_ROOT/aks_jobs/environment.yml" --version "$IMAGE_TAG" --set "image=$image" --output none
}

step_k8s() {
  # A private kubeconfig: the user's own ~/.kube/config is left alone.
  local cluster kubeconfig="$WORK_DIR/kubeconfig"
  cluster="$(output clusterName)"
  az aks get-credentials --resource-group "$RESOURCE_GROUP" --name "$cluster" --file "$kubeconfig" --overwrite-existing
  kubelogin convert-kubeconfig --login azurecli --kubeconfig "$kubeconfig"
  log "applying AML instance types to $cluster (the role assignment can take a minute to reach the cluster)"
  retry 10 30 kubectl --kubeconfig "$kubeconfig" apply -f "$REPO_ROOT/infra/k8s/instance-types.yaml"
  kubectl --kubeconfig "$kubeconfig" get instancetype
}

step_function() {
  local app
  app="$(output functionAppName)"
  # func packs the app root; without .funcignore it would upload virtual environments and node_modules.
  [[ -f "$REPO_ROOT/.funcignore" ]] || die "$REPO_ROOT/.funcignore is missing: func would upload .venv and node_modules"
  log "publishing the Function app to $app (remote build of requirements.txt)"
  (cd "$REPO_ROOT" && func azure functionapp publish "$app" --python --build remote)
}

# The appId of the UI's app registration, or nothing if it does not exist yet.
ui_app_registration() {
  az ad app list --display-name "$UI_APP_REGISTRATION" --query "[0].appId" --output tsv
}

step_ui() {
  local app host client_id package="$WORK_DIR/ui-package"
  app="$(output uiAppName)"
  host="$(output uiHostName)"
  client_id="$(ui_app_registration)"
  [[ -n "$client_id" ]] || die "no app registration '$UI_APP_REGISTRATION': run --steps infra first"
  log "allowing sign-in redirects to https://$host"
  az ad app update --id "$client_id" --web-redirect-uris "https://$host/.auth/login/aad/callback" --output none
  # The package App Service builds: ui/ and the contracts it reads (pipeline_contracts/) as in the repo, its
  # pinned requirements under constraints.txt.
  rm -rf "$package" && mkdir -p "$package"
  tar -C "$REPO_ROOT" --exclude='__pycache__' --exclude='*.pyc' -cf - ui pipeline_contracts constraints.txt | tar -C "$package" -xf -
  printf '%s\n' '-c constraints.txt' '-r ui/requirements.txt' > "$package/requirements.txt"
  (cd "$package" && zip -qr "$WORK_DIR/ui.zip" .)
  log "deploying the web UI to $app (App Service builds ui/requirements.txt)"
  az webapp deploy --resource-group "$RESOURCE_GROUP" --name "$app" --src-path "$WORK_DIR/ui.zip" --type zip \
    --output none
}

eventgrid_extension_key() {
  local key
  key="$(az functionapp keys list --resource-group "$RESOURCE_GROUP" --name "$1" \
    --query systemKeys.eventgrid_extension --output tsv)"
  [[ -n "$key" ]] && printf '%s' "$key"
}

step_events() {
  local app topic container prefix host function_name key endpoint
  app="$(output functionAppName)"
  topic="$(output systemTopicName)"
  container="$(output dataContainerName)"
  prefix="$(output inputsPrefix)"
  host="$(az functionapp show --resource-group "$RESOURCE_GROUP" --name "$app" --query defaultHostName --output tsv)"

  function_name="$BLOB_FUNCTION_NAME"
  if [[ -z "$function_name" ]]; then
    local names=()
    mapfile -t names < <(az functionapp function list --resource-group "$RESOURCE_GROUP" --name "$app" \
      --query "[?config.bindings[?type=='eventGridTrigger']].name" --output tsv)
    (( ${#names[@]} == 1 )) || die "expected one Event Grid-triggered function in $app, found ${#names[@]}: set BLOB_FUNCTION_NAME"
    function_name="${names[0]##*/}"
  fi

  # The host creates the eventgrid_extension system key when it first starts with the Event Grid trigger.
  key="$(retry 20 15 eventgrid_extension_key "$app")" || die "no eventgrid_extension key on $app: is the app published and running?"
  endpoint="https://$host/runtime/webhooks/eventgrid?functionName=$function_name&code=$key"
  log "subscribing $function_name to BlobCreated and BlobDeleted under $container/$prefix (Event Grid validates the webhook)"
  az eventgrid system-topic event-subscription create --resource-group "$RESOURCE_GROUP" \
    --system-topic-name "$topic" --name "$EVENT_SUBSCRIPTION_NAME" \
    --endpoint-type webhook --endpoint "$endpoint" \
    --included-event-types Microsoft.Storage.BlobCreated Microsoft.Storage.BlobDeleted \
    --subject-begins-with "/blobServices/default/containers/$container/blobs/$prefix" \
    --event-delivery-schema eventgridschema --output none
}

require_tools az tar sed
wants ui && require_tools zip
WORK_DIR="$(mktemp -d)"
trap 'rm -rf "$WORK_DIR"' EXIT
wants k8s && require_tools kubectl kubelogin
wants function && require_tools func
if wants environment; then
  az extension show --name ml --output none 2>/dev/null || die "the az 'ml' extension is missing: az extension add --name ml"
fi
[[ -z "$SUBSCRIPTION" ]] || az account set --subscription "$SUBSCRIPTION"
[[ -n "$IMAGE_TAG" ]] || IMAGE_TAG="$(default_image_tag)"

for step in infra image environment k8s function ui events; do
  if wants "$step"; then
    log "step: $step"
    "step_$step"
  fi
done

log "done. Resource group $RESOURCE_GROUP, Function app $(output functionAppName), image tag $IMAGE_TAG."
log "Web UI: https://$(output uiHostName) (sign in with your Entra ID account)."
log "Verify: docs/deploy.md ('Verify'). Upload a PDF: az storage blob upload --auth-mode login" \
  "--account-name $(output storageAccountName) --container-name $(output dataContainerName) --name $(output inputsPrefix)<file>.pdf --file <file>.pdf"
