// Azure Machine Learning: workspace with its Key Vault, Container Registry and storage, the
// identity-based datastore over the data container, and the user-assigned identity that the
// Kubernetes compute runs jobs as (roles for it are in roles.bicep, the attach in compute.bicep).

param location string
param tags object
param workspaceName string
param workspaceStorageName string
param storageSkuName string
param keyVaultName string
param registryName string
param registrySku string
param amlInsightsId string
param computeIdentityName string
param datastoreName string
param dataStorageAccountName string
param dataContainerName string

@description('Days a deleted Key Vault stays recoverable (7-90); purge protection keeps it until then.')
param keyVaultRetentionDays int

// The workspace's own store for code snapshots, job outputs and MLflow artifacts. Shared keys stay on
// here: AML's default system datastores (AccessKey mode) and its artifact service hand out
// account-key SAS; user data lives in the identity-only data account instead.
resource workspaceStorage 'Microsoft.Storage/storageAccounts@2026-04-01' = {
  name: workspaceStorageName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: storageSkuName
  }
  // checkov:skip=CKV_AZURE_35: AML jobs on AKS and the control plane reach the workspace store over its public endpoint (no VNet in this deployment); private endpoints are the documented hardening step.
  // checkov:skip=CKV_AZURE_59: same as CKV_AZURE_35; anonymous blob access is off.
  // checkov:skip=CKV_AZURE_206: replication is main.bicep's storageSkuName (default Standard_ZRS); checkov cannot follow a module parameter.
  // checkov:skip=CKV_AZURE_43: the name comes from main.bicep (lowercase st<prefix>ml<suffix>, at most 24 characters); checkov cannot follow a module parameter.
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource keyVault 'Microsoft.KeyVault/vaults@2026-02-01' = {
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: keyVaultRetentionDays
    enablePurgeProtection: true
    // checkov:skip=CKV_AZURE_189: the endpoint stays so its firewall applies: deny by default, Azure ML (a trusted service) allowed. Nothing else reads this vault (all datastores are identity-based or AML-managed); fully private needs private endpoints.
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Deny'
    }
  }
}

resource registry 'Microsoft.ContainerRegistry/registries@2025-11-01' = {
  name: registryName
  location: location
  tags: tags
  sku: {
    name: registrySku
  }
  // checkov:skip=CKV_AZURE_139: AKS nodes, ACR Tasks (az acr build) and AML pull/push over the public endpoint; private access needs the Premium SKU plus private endpoints.
  // checkov:skip=CKV_AZURE_166: quarantine is a Premium-only, preview feature; images come only from this repo's Dockerfile via az acr build.
  // checkov:skip=CKV_AZURE_163: vulnerability scanning is Microsoft Defender for Containers, a subscription-level plan (documented as a hardening step), not a registry property.
  properties: {
    // Pulls use Entra ID (AcrPull for the compute identity, AML grants endpoint identities itself).
    adminUserEnabled: false
    anonymousPullEnabled: false
    publicNetworkAccess: 'Enabled'
  }
}

resource workspace 'Microsoft.MachineLearningServices/workspaces@2026-05-01' = {
  name: workspaceName
  location: location
  tags: tags
  sku: {
    name: 'Basic'
    tier: 'Basic'
  }
  identity: {
    type: 'SystemAssigned'
  }
  // checkov:skip=CKV_AZURE_243: a private-endpoint workspace needs a VNet the Flex Function app and AKS would join; this deployment uses Entra ID + RBAC on public endpoints (documented hardening step).
  properties: {
    friendlyName: workspaceName
    storageAccount: workspaceStorage.id
    keyVault: keyVault.id
    applicationInsights: amlInsightsId
    containerRegistry: registry.id
    publicNetworkAccess: 'Enabled'
    systemDatastoresAuthMode: 'AccessKey'
    v1LegacyMode: false
  }
}

// uploads (inputs/) and snapshots (processed/) as seen by jobs: no stored credential, so a job reads
// and writes with the compute's managed identity.
resource datastore 'Microsoft.MachineLearningServices/workspaces/datastores@2026-05-01' = {
  parent: workspace
  name: datastoreName
  properties: {
    datastoreType: 'AzureBlob'
    description: 'The data container: inputs/ (uploaded PDFs) and processed/ (immutable text snapshots).'
    accountName: dataStorageAccountName
    containerName: dataContainerName
    endpoint: environment().suffixes.storage
    protocol: 'https'
    subscriptionId: subscription().subscriptionId
    resourceGroup: resourceGroup().name
    serviceDataAccessAuthIdentity: 'None'
    credentials: {
      credentialsType: 'None'
    }
  }
}

resource computeIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = {
  name: computeIdentityName
  location: location
  tags: tags
}

output workspaceName string = workspace.name
output workspaceId string = workspace.id
output workspacePrincipalId string = workspace.identity.principalId
output registryName string = registry.name
output registryLoginServer string = registry.properties.loginServer
output computeIdentityId string = computeIdentity.id
output computeIdentityPrincipalId string = computeIdentity.properties.principalId
