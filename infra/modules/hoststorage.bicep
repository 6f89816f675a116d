// The Functions host's own storage account (AzureWebJobsStorage): its locks, timers, blob-trigger
// receipts and the Flex deployment package. Kept apart from the data account so the Function app's
// identity can own this one while it only reads blobs on the data account (modules/roles.bicep).

param location string
param tags object
param storageAccountName string
param skuName string
param deploymentContainerName string

resource account 'Microsoft.Storage/storageAccounts@2026-04-01' = {
  name: storageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  // checkov:skip=CKV_AZURE_35: the Functions host reaches its storage over the public endpoint with Entra ID only (shared keys off); private endpoints are the documented hardening step.
  // checkov:skip=CKV_AZURE_59: same as CKV_AZURE_35; anonymous blob access is off (allowBlobPublicAccess: false).
  // checkov:skip=CKV_AZURE_206: replication is main.bicep's storageSkuName (default Standard_ZRS); checkov cannot follow a module parameter.
  // checkov:skip=CKV_AZURE_43: the name comes from main.bicep (lowercase st<prefix>host<suffix>, at most 24 characters); checkov cannot follow a module parameter.
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2026-04-01' = {
  parent: account
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2026-04-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

output accountName string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
output deploymentContainerName string = deploymentContainer.name
