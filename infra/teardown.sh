#!/usr/bin/env bash
# Deletes everything infra/deploy.sh created: the AML workspace permanently (so its name can be
# reused at once), then the resource group with the cluster, storage, Function app and the rest, and
# the web UI's Entra app registration (it lives in the tenant, not in the group).
# The Key Vault stays soft-deleted with purge protection for keyVaultRetentionDays (default 7):
# redeploying into a resource group of the same name before then needs another nameSuffix
# (deploy.sh --set nameSuffix=...). Guide: docs/deploy.md.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: infra/teardown.sh -g RESOURCE_GROUP [--yes] [--no-wait]

  -g, --resource-group NAME   resource group to delete (env RESOURCE_GROUP)
  -s, --subscription ID       subscription (env SUBSCRIPTION; default: az's current one)
      UI_APP_REGISTRATION     (env) the UI's app registration name (default gpt2-pdf-ui-<resource group>)
      --yes                   do not ask for confirmation
      --no-wait               return once Azure has accepted the group deletion
EOF
}

RESOURCE_GROUP="${RESOURCE_GROUP:-}"
SUBSCRIPTION="${SUBSCRIPTION:-}"
CONFIRMED=false
WAIT_ARGS=()

die() { printf 'teardown.sh: %s\n' "$*" >&2; exit 1; }
log() { printf '[teardown %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    -g|--resource-group) RESOURCE_GROUP="${2:?$1 needs a value}"; shift 2 ;;
    -s|--subscription) SUBSCRIPTION="${2:?$1 needs a value}"; shift 2 ;;
    --yes) CONFIRMED=true; shift ;;
    --no-wait) WAIT_ARGS=(--no-wait); shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done

[[ -n "$RESOURCE_GROUP" ]] || die "no resource group: pass -g NAME or set RESOURCE_GROUP"
UI_APP_REGISTRATION="${UI_APP_REGISTRATION:-gpt2-pdf-ui-$RESOURCE_GROUP}"
command -v az >/dev/null 2>&1 || die "'az' is not installed"
[[ -z "$SUBSCRIPTION" ]] || az account set --subscription "$SUBSCRIPTION"
az group show --name "$RESOURCE_GROUP" --output none 2>/dev/null || die "resource group '$RESOURCE_GROUP' not found"

if [[ "$CONFIRMED" != true ]]; then
  read -r -p "Delete resource group '$RESOURCE_GROUP' and everything in it? Type its name to confirm: " answer
  [[ "$answer" == "$RESOURCE_GROUP" ]] || die "not confirmed; nothing deleted"
fi

workspaces=()
mapfile -t workspaces < <(az resource list --resource-group "$RESOURCE_GROUP" \
  --resource-type Microsoft.MachineLearningServices/workspaces --query "[].name" --output tsv)
for workspace in ${workspaces[@]+"${workspaces[@]}"}; do
  log "permanently deleting AML workspace $workspace"
  az ml workspace delete --resource-group "$RESOURCE_GROUP" --name "$workspace" --permanently-delete --yes
done

log "deleting resource group $RESOURCE_GROUP (10-20 minutes)"
az group delete --name "$RESOURCE_GROUP" --yes ${WAIT_ARGS[@]+"${WAIT_ARGS[@]}"}
apps=()
mapfile -t apps < <(az ad app list --display-name "$UI_APP_REGISTRATION" --query "[].appId" --output tsv)
for app in ${apps[@]+"${apps[@]}"}; do
  log "deleting the UI's app registration $UI_APP_REGISTRATION ($app)"
  az ad app delete --id "$app"
done
log "done. The Key Vault stays soft-deleted (purge protection) until its retention ends."
