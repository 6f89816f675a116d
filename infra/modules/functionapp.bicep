// The control plane: a Python 3.11 Function app on the Flex Consumption plan.
// Flex rather than Premium: it scales to zero between bursts (the work is a blob event, a timer tick
// and a few HTTP calls; training runs on AKS), supports managed identity for its host storage and
// its deployment package, and its blob trigger is the Event Grid source this design uses anyway.
// Premium would add an always-on instance for no gain; always-ready instances are a parameter here.

param location string
param tags object
param planName string
param functionAppName string
@description('The host\'s own storage account (modules/hoststorage.bicep), not the data account.')
param hostStorageAccountName string
param deploymentContainerName string

@description('Subnet for regional VNet integration (delegated to Microsoft.App/environments): reaches the scoring router\'s internal load balancer for smoke tests.')
param subnetId string
param functionInsightsName string

@description('Settings the Python code reads (function_app/settings.py: setting_names()), built in main.bicep.')
param codeSettings object

param pythonVersion string
param instanceMemoryMB int
param maximumInstanceCount int

@description('Instances kept warm for the HTTP functions (0 = scale to zero; each one is billed while idle).')
param alwaysReadyHttpInstances int

resource account 'Microsoft.Storage/storageAccounts@2026-04-01' existing = {
  name: hostStorageAccountName
}

resource functionInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: functionInsightsName
}

// The Functions runtime's own settings (not read by our code). On Flex Consumption the runtime and
// extension version live in functionAppConfig, so FUNCTIONS_WORKER_RUNTIME / FUNCTIONS_EXTENSION_VERSION
// are not app settings; the host storage is identity-based (its own account, shared keys off).
var runtimeSettings = {
  AzureWebJobsStorage__blobServiceUri: account.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: account.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: account.properties.primaryEndpoints.table
  AzureWebJobsStorage__credential: 'managedidentity'
  APPLICATIONINSIGHTS_CONNECTION_STRING: functionInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD'
}

resource plan 'Microsoft.Web/serverfarms@2025-03-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  // checkov:skip=CKV_AZURE_225: Flex Consumption zone redundancy exists only in some regions; the control plane is stateless (state in Table storage) and the timer re-scans, so a zone outage delays work, it does not lose it.
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2025-03-01' = {
  name: functionAppName
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  // checkov:skip=CKV_AZURE_222: Event Grid delivers blob events to the blob extension webhook and people use the HTTP API/UI, both over the public endpoint (HTTPS only, keys or Entra ID).
  // checkov:skip=CKV_AZURE_17: browsers and the Event Grid webhook cannot present client certificates.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales instances per demand; warm instances are the alwaysReadyHttpInstances parameter.
  // checkov:skip=CKV_AZURE_213: App Service health check (instance eviction) does not apply to Flex Consumption's per-request scaling; /api/health serves external probes.
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    virtualNetworkSubnetId: subnetId
    publicNetworkAccess: 'Enabled'
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${account.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
        alwaysReady: alwaysReadyHttpInstances > 0 ? [
          {
            name: 'http'
            instanceCount: alwaysReadyHttpInstances
          }
        ] : []
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      cors: {
        allowedOrigins: []
      }
      appSettings: [for setting in items(union(runtimeSettings, codeSettings)): {
        name: setting.key
        value: setting.value
      }]
    }
  }
}

// Publishing uses Entra ID tokens (func publish / az), never basic credentials.
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2025-03-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2025-03-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = functionApp.name
output principalId string = functionApp.identity.principalId
output defaultHostName string = functionApp.properties.defaultHostName
