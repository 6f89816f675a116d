// The data storage account: uploads (inputs/), text snapshots (processed/), each run's model and
// evaluation (runs/), the status table and the blob trigger's poison queue (the webjobs blob extension
// puts it in the triggering blob's account). The Functions host keeps its own state elsewhere
// (modules/hoststorage.bicep). Every client uses Entra ID, so shared keys are off.
// An Event Grid system topic publishes its BlobCreated events; the subscription to the Function's
// blob extension webhook is created by infra/deploy.sh once the app is published (it needs the
// blobs_extension key, which exists only then).

param location string
param tags object
param storageAccountName string
param skuName string
param dataContainerName string
param statusTableName string
param poisonQueueName string
param systemTopicName string

@description('Days a deleted blob or container can be restored: an upload is never lost to a mistake.')
param softDeleteDays int

resource account 'Microsoft.Storage/storageAccounts@2026-04-01' = {
  name: storageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  // checkov:skip=CKV_AZURE_35: the Functions host (Flex Consumption, no VNet integration) and the AKS jobs reach the account over its public endpoint; every request needs Entra ID + RBAC (shared keys off). Private endpoints are the documented hardening step.
  // checkov:skip=CKV_AZURE_59: same as CKV_AZURE_35; anonymous blob access is off (allowBlobPublicAccess: false).
  // checkov:skip=CKV_AZURE_206: replication is main.bicep's storageSkuName (default Standard_ZRS); checkov cannot follow a module parameter.
  // checkov:skip=CKV_AZURE_43: the name comes from main.bicep (lowercase st<prefix>data<suffix>, at most 24 characters); checkov cannot follow a module parameter.
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
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
  }
}

resource dataContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2026-04-01' = {
  parent: blobService
  name: dataContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2026-04-01' = {
  parent: account
  name: 'default'
}

// Blobs that fail 5 times land here (the host would create it on first use; declaring it lets an
// alert watch it from day one).
resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2026-04-01' = {
  parent: queueService
  name: poisonQueueName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2026-04-01' = {
  parent: account
  name: 'default'
}

resource statusTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2026-04-01' = {
  parent: tableService
  name: statusTableName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: systemTopicName
  location: location
  tags: tags
  properties: {
    source: account.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

output accountName string = account.name
output accountId string = account.id
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
output dataContainerName string = dataContainer.name
output systemTopicName string = systemTopic.name
