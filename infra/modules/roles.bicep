// Every role assignment of the deployment, in one place to review least privilege:
//   Function app identity  - host account (its own, modules/hoststorage.bicep): Storage Blob Data Owner,
//                            Queue and Table Data Contributor (host state, blob trigger receipts,
//                            deployment package). Data account: Storage Blob Data Reader on the data
//                            container (reads inputs/ and processed/, writes no blob), Storage Queue Data
//                            Contributor (the blob trigger's poison queue lives in the triggering blob's
//                            account), Storage Table Data Contributor (status table); its App Insights: Monitoring Metrics Publisher
//                            (Entra ID telemetry); the AML workspace: AzureML Data Scientist (submit
//                            pipeline jobs, register models, manage online endpoints and deployments,
//                            but not create computes or change the workspace).
//   Compute identity       - data container: Storage Blob Data Contributor, with a condition that
//                            writes and deletes only under processed/ and runs/ (jobs read inputs/,
//                            write snapshots, each run's model and evaluation); the registry: AcrPull (job image). Models go to the AML
//                            registry through the workspace, which needs no extra role here.
//   Workspace identity     - AKS cluster: Reader, Kubernetes Extension Contributor and Azure
//                            Kubernetes Service Cluster Admin Role, which the Kubernetes compute attach needs.
//   Web UI identity        - data container: Storage Blob Data Contributor with a condition that writes
//                            only under inputs/ and deletes nothing (uploads); the workspace: a custom
//                            role with the one action that issues aml_token scoring tokens. It reads the
//                            status API with the Function app's key (modules/ui.bicep).
//   AKS cluster identity   - the nodes' subnet: Network Contributor, so the scoring router's internal
//                            load balancer can take an address there.
//   Deployer (optional)    - AKS cluster: Azure Kubernetes Service RBAC Cluster Admin, to apply the
//                            cluster-scoped AML instance types with kubectl (Entra ID auth).

param dataStorageAccountName string
param hostStorageAccountName string
param dataContainerName string

@description('Where uploads go: the only prefix the UI identity may write under.')
param inputsPrefix string
@description('Prefixes the compute identity may write under (function_app/backends/aml_pipeline.py COMPUTE_WRITABLE_PREFIXES): text snapshots ...')
param processedPrefix string

@description('... and each run\'s model and evaluation (runs/<run id>/).')
param runsPrefix string
param functionInsightsName string
param workspaceName string
param registryName string
param clusterName string

param functionPrincipalId string
param uiPrincipalId string
param clusterPrincipalId string
param vnetName string
param aksSubnetName string
param computePrincipalId string
param workspacePrincipalId string

@description('Object id of who runs infra/deploy.sh (kubectl access); empty = no assignment.')
param deployerPrincipalId string

@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param deployerPrincipalType string

var roleIds = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
  networkContributor: '4d97b98b-1d4f-4787-a291-c67834d212e7'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  azureMLDataScientist: 'f6c7c914-8db3-469d-8ca1-694a8f32e121'
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d'
  reader: 'acdd72a7-3385-48ef-bd42-f606fba81ae7'
  kubernetesExtensionContributor: '85cb6faf-e071-4c9b-8136-154b5a04f717'
  aksClusterAdminRole: '0ab0b1a8-8aac-4efd-b8c2-3ee1fb270be8'
  aksRbacClusterAdmin: 'b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b'
}

// Blob writes, appends and deletes are allowed only under processed/ and runs/ (every output the
// pipeline binds); reads are not conditioned.
var blobWriteAction = 'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write'
var blobAddAction = 'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action'
var blobDeleteAction = 'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete'
var blobPathAttribute = '@Resource[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:path]'
var computeWriteCondition = '((!(ActionMatches{\'${blobWriteAction}\'}) AND !(ActionMatches{\'${blobAddAction}\'}) AND !(ActionMatches{\'${blobDeleteAction}\'})) OR (${blobPathAttribute} StringStartsWith \'${processedPrefix}\') OR (${blobPathAttribute} StringStartsWith \'${runsPrefix}\'))'

// The UI uploads (write, and the append of a resumed upload) only under inputs/ and never deletes.
var uiWriteCondition = '((!(ActionMatches{\'${blobWriteAction}\'}) AND !(ActionMatches{\'${blobAddAction}\'}) AND !(ActionMatches{\'${blobDeleteAction}\'})) OR ((ActionMatches{\'${blobWriteAction}\'} OR ActionMatches{\'${blobAddAction}\'}) AND ${blobPathAttribute} StringStartsWith \'${inputsPrefix}\'))'

resource hostAccount 'Microsoft.Storage/storageAccounts@2026-04-01' existing = {
  name: hostStorageAccountName
}

resource aksSubnet 'Microsoft.Network/virtualNetworks/subnets@2024-05-01' existing = {
  name: '${vnetName}/${aksSubnetName}'
}

resource dataAccount 'Microsoft.Storage/storageAccounts@2026-04-01' existing = {
  name: dataStorageAccountName

  resource blobService 'blobServices' existing = {
    name: 'default'

    resource dataContainer 'containers' existing = {
      name: dataContainerName
    }
  }
}

resource functionInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: functionInsightsName
}

resource workspace 'Microsoft.MachineLearningServices/workspaces@2026-05-01' existing = {
  name: workspaceName
}

resource registry 'Microsoft.ContainerRegistry/registries@2025-11-01' existing = {
  name: registryName
}

resource cluster 'Microsoft.ContainerService/managedClusters@2026-05-01' existing = {
  name: clusterName
}

var hostRoles = [
  roleIds.storageBlobDataOwner
  roleIds.storageQueueDataContributor
  roleIds.storageTableDataContributor
]

resource functionOnHostStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in hostRoles: {
  name: guid(hostAccount.id, functionPrincipalId, roleId)
  scope: hostAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

resource functionBlobReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dataAccount::blobService::dataContainer.id, functionPrincipalId, roleIds.storageBlobDataReader)
  scope: dataAccount::blobService::dataContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataReader)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource functionQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dataAccount.id, functionPrincipalId, roleIds.storageQueueDataContributor)
  scope: dataAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageQueueDataContributor)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource functionTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dataAccount.id, functionPrincipalId, roleIds.storageTableDataContributor)
  scope: dataAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageTableDataContributor)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource functionMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(functionInsights.id, functionPrincipalId, roleIds.monitoringMetricsPublisher)
  scope: functionInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.monitoringMetricsPublisher)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource functionDataScientist 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, functionPrincipalId, roleIds.azureMLDataScientist)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.azureMLDataScientist)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource computeSnapshotWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dataAccount::blobService::dataContainer.id, computePrincipalId, roleIds.storageBlobDataContributor)
  scope: dataAccount::blobService::dataContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataContributor)
    principalId: computePrincipalId
    principalType: 'ServicePrincipal'
    description: 'AML jobs read the whole data container and write only under ${processedPrefix} and ${runsPrefix}.'
    condition: computeWriteCondition
    conditionVersion: '2.0'
  }
}

resource computeAcrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, computePrincipalId, roleIds.acrPull)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.acrPull)
    principalId: computePrincipalId
    principalType: 'ServicePrincipal'
  }
}

var workspaceClusterRoles = [
  roleIds.reader
  roleIds.kubernetesExtensionContributor
  roleIds.aksClusterAdminRole
]

resource workspaceOnCluster 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in workspaceClusterRoles: {
  name: guid(cluster.id, workspacePrincipalId, roleId)
  scope: cluster
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    principalId: workspacePrincipalId
    principalType: 'ServicePrincipal'
  }
}]

resource uiUploader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dataAccount::blobService::dataContainer.id, uiPrincipalId, roleIds.storageBlobDataContributor)
  scope: dataAccount::blobService::dataContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataContributor)
    principalId: uiPrincipalId
    principalType: 'ServicePrincipal'
    description: 'The web UI uploads under ${inputsPrefix} only and deletes nothing.'
    condition: uiWriteCondition
    conditionVersion: '2.0'
  }
}

// aml_token endpoints issue tokens through this action (POST .../onlineEndpoints/<name>/token, what
// azure-ai-ml's online_endpoints.get_keys calls; MicrosoftDocs/azure-ai-docs
// articles/machine-learning/how-to-authenticate-online-endpoint.md); nothing else in the workspace.
resource scoringTokenRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, 'online-endpoint-token-reader')
  properties: {
    roleName: 'Online endpoint token reader (${resourceGroup().name})'
    description: 'Get aml_token scoring tokens of Azure ML online endpoints; nothing else.'
    type: 'CustomRole'
    assignableScopes: [
      resourceGroup().id
    ]
    permissions: [
      {
        actions: [
          'Microsoft.MachineLearningServices/workspaces/onlineEndpoints/token/action'
        ]
        notActions: []
      }
    ]
  }
}

resource uiScoringTokens 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, uiPrincipalId, scoringTokenRole.id)
  scope: workspace
  properties: {
    roleDefinitionId: scoringTokenRole.id
    principalId: uiPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource clusterNetworkContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(aksSubnet.id, clusterPrincipalId, roleIds.networkContributor)
  scope: aksSubnet
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.networkContributor)
    principalId: clusterPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource deployerClusterAdmin 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(cluster.id, deployerPrincipalId, roleIds.aksRbacClusterAdmin)
  scope: cluster
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.aksRbacClusterAdmin)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
  }
}
