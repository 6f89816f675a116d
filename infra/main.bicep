// PDFs -> fine-tuned GPT-2 on AKS: the whole Azure footprint in one resource group.
// Deploy with infra/deploy.sh (docs/deploy.md); this file only wires modules and names things.
targetScope = 'resourceGroup'

// ---------- placement and naming ----------
param location string = resourceGroup().location

@description('Short lowercase letters/digits that start every resource name.')
@minLength(3)
@maxLength(10)
param namePrefix string = 'gpt2pdf'

@description('Makes global names unique; change it to redeploy while a deleted Key Vault is still soft-deleted.')
@minLength(3)
@maxLength(6)
param nameSuffix string = take(uniqueString(resourceGroup().id), 6)

param tags object = {
  application: 'gpt2-pdf-pipeline'
}

param storageAccountName string = toLower('st${namePrefix}data${nameSuffix}')
param hostStorageAccountName string = toLower('st${namePrefix}host${nameSuffix}')
param workspaceStorageName string = toLower('st${namePrefix}ml${nameSuffix}')
param functionAppName string = '${namePrefix}-func-${nameSuffix}'
param functionPlanName string = '${namePrefix}-plan-${nameSuffix}'
param logAnalyticsName string = '${namePrefix}-log-${nameSuffix}'
param functionInsightsName string = '${namePrefix}-appi-func-${nameSuffix}'
param amlInsightsName string = '${namePrefix}-appi-ml-${nameSuffix}'
param systemTopicName string = '${namePrefix}-egst-${nameSuffix}'
param keyVaultName string = 'kv-${namePrefix}-${nameSuffix}'
param registryName string = toLower('acr${namePrefix}${nameSuffix}')
param workspaceName string = '${namePrefix}-mlw-${nameSuffix}'
param clusterName string = '${namePrefix}-aks-${nameSuffix}'
param computeIdentityName string = '${namePrefix}-id-compute-${nameSuffix}'
param vnetName string = '${namePrefix}-vnet-${nameSuffix}'
param uiPlanName string = '${namePrefix}-plan-ui-${nameSuffix}'
param uiAppName string = '${namePrefix}-ui-${nameSuffix}'

// ---------- names the code and the jobs agree on (function_app/settings.py defaults) ----------
param dataContainerName string = 'gpt2-training-data'
param statusTableName string = 'pipelinestatus'
param computeName string = 'aks-compute-target'
param cpuInstanceType string = 'cpu-small'
param gpuInstanceType string = 'gpu-t4'
param datastoreName string = 'gpt2_training_data'

@description('Online endpoint name; it must be unique in the Azure region.')
param endpointName string = 'gpt2-pdf'

param modelName string = 'gpt2-pdf'

// ---------- control-plane behaviour ----------
param timerSchedule string = '0 */1 * * * *'
param debounceSeconds int = 60
param baseModel string = 'gpt2'

@allowed([
  'default'
  'memorize'
])
param trainPreset string = 'default'

@description('Override of the train step\'s epochs (empty = the preset\'s own).')
param trainEpochs string = ''
@description('Override of the train step\'s learning rate (empty = the preset\'s own).')
param trainLearningRate string = ''

param smokePrompt string = 'The documents say that'
param maxTransientRetries int = 6
param deployTimeoutSeconds int = 1800
param debounceMaxWaitSeconds int = 900
param queuedTimeoutSeconds int = 3600
param preprocessTimeoutSeconds int = 3600
param trainTimeoutSeconds int = 43200
param evaluateTimeoutSeconds int = 3600
param documentRetrySeconds int = 300
param documentMaxAttempts int = 3
param keepRuns int = 200
@description('Text snapshots kept in processed/ (plus the serving model\'s); older ones are deleted. 0 keeps all.')
param snapshotRetention int = 5
@description('Limits (see docs/deploy.md): text per document, per snapshot, per byte of PDF; training steps and seconds (0 = none).')
param preprocessMaxDocumentChars int = 10000000
param preprocessMaxCorpusChars int = 200000000
param preprocessMaxCharsPerByte int = 100
param trainMaxSteps int = 0
param trainMaxWallS int = 0
@description('Hyperparameter sweep of the train step (docs/deploy.md): trials (0 = off), trials at once, its time limit in s (0 = the train deadline), JSON overrides of the search space and the Bandit rule (empty = defaults).')
param sweepTrials int = 0
param sweepMaxConcurrentTrials int = 2
param sweepTimeoutS int = 0
param sweepSpace string = ''
param sweepRule string = ''
@description('Incoming webhook (Teams, Slack) told when a run ends (empty = none); it holds a token, so pass it from Key Vault.')
@secure()
param runWebhookUrl string = ''
param runWebhookTimeoutS int = 5

@description('Image for jobs and scoring instead of the registered environment (azureml:gpt2-pdf-jobs@latest); empty = registered environment.')
param environmentImageOverride string = ''

// ---------- sizes and cost levers ----------
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
])
@description('Replication of both storage accounts; ZRS survives a zone outage (use Standard_LRS where ZRS is not offered).')
param storageSkuName string = 'Standard_ZRS'

param softDeleteDays int = 7
param logRetentionInDays int = 30
param logDailyQuotaGb int = -1

@allowed([
  '3.11'
])
param pythonVersion string = '3.11'

@allowed([
  512
  2048
  4096
])
param functionInstanceMemoryMB int = 2048

param functionMaximumInstanceCount int = 40
param alwaysReadyHttpInstances int = 0

@allowed([
  'Basic'
  'Standard'
  'Premium'
])
param registrySku string = 'Standard'

param keyVaultRetentionDays int = 7
param kubernetesVersion string = ''

@allowed([
  'Free'
  'Standard'
])
param aksSkuTier string = 'Free'

param systemPoolVmSize string = 'Standard_D4ds_v5'
param systemPoolMaxCount int = 3

@description('GPU VM size of the training pool (needs regional GPU quota); NC4as_T4_v3 = 1x T4 16 GB.')
param gpuPoolVmSize string = 'Standard_NC4as_T4_v3'

param gpuPoolMaxCount int = 1

@description('GPU nodes always running (billed while idle). 1 by default: the extension\'s Volcano scheduler does not let the cluster autoscaler add a GPU node from zero (docs/deploy.md, "GPU node").')
@minValue(0)
param gpuPoolMinCount int = 1
param osDiskSizeGB int = 128
param enableEncryptionAtHost bool = false
param apiServerAuthorizedIpRanges array = []
param enableContainerInsights bool = true
param amlExtensionName string = 'azureml'
param workloadNamespace string = 'gpt2-pdf'
@description('internal (default): scoring router on an internal load balancer, reachable only inside the VNet (Function app, UI). publicTls: HTTPS on a public IP with your certificate (docs/deploy.md).')
@allowed([
  'internal'
  'publicTls'
])
param scoringExposure string = 'internal'

param scoringSslCname string = ''
param scoringSslSecretName string = ''

// ---------- network (modules/network.bicep) ----------
param vnetAddressPrefix string = '10.40.0.0/16'
param aksSubnetPrefix string = '10.40.0.0/22'
param functionSubnetPrefix string = '10.40.4.0/24'
param uiSubnetPrefix string = '10.40.5.0/24'

// ---------- web UI (modules/ui.bicep) ----------
@description('Application (client) id of the Entra app registration the UI signs people in with; infra/deploy.sh creates it and passes it.')
param uiAuthClientId string = ''

param uiSkuName string = 'B1'

// ---------- who deploys ----------
@description('Object id of the user or service principal running infra/deploy.sh; gets kubectl rights on the cluster.')
param deployerPrincipalId string = ''

@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param deployerPrincipalType string = 'User'

// The blob layout inside the data container is fixed by the code (architecture: inputs/, processed/).
var inputsPrefix = 'inputs/'
var processedPrefix = 'processed/'
var runsPrefix = 'runs/'
var deploymentContainerName = 'app-package'
var aksSubnetName = 'aks-nodes'
var poisonQueueName = 'webjobs-blobtrigger-poison'

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    tags: tags
    logAnalyticsName: logAnalyticsName
    functionInsightsName: functionInsightsName
    amlInsightsName: amlInsightsName
    dailyQuotaGb: logDailyQuotaGb
    retentionInDays: logRetentionInDays
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: location
    tags: tags
    storageAccountName: storageAccountName
    skuName: storageSkuName
    dataContainerName: dataContainerName
    statusTableName: statusTableName
    poisonQueueName: poisonQueueName
    systemTopicName: systemTopicName
    softDeleteDays: softDeleteDays
  }
}

module hostStorage 'modules/hoststorage.bicep' = {
  name: 'hoststorage'
  params: {
    location: location
    tags: tags
    storageAccountName: hostStorageAccountName
    skuName: storageSkuName
    deploymentContainerName: deploymentContainerName
  }
}

module network 'modules/network.bicep' = {
  name: 'network'
  params: {
    location: location
    tags: tags
    vnetName: vnetName
    addressPrefix: vnetAddressPrefix
    aksSubnetPrefix: aksSubnetPrefix
    functionSubnetPrefix: functionSubnetPrefix
    uiSubnetPrefix: uiSubnetPrefix
  }
}

// Every setting function_app/settings.py reads (setting_names()); tests/test_infra.py keeps the two
// in step. DataStorage is identity-based here: the host and our clients use the three service URIs.
var functionAppSettings = {
  DataStorage__blobServiceUri: storage.outputs.blobEndpoint
  DataStorage__queueServiceUri: storage.outputs.queueEndpoint
  DataStorage__tableServiceUri: storage.outputs.tableEndpoint
  DATA_CONTAINER: dataContainerName
  STATUS_TABLE: statusTableName
  TIMER_SCHEDULE: timerSchedule
  DEBOUNCE_SECONDS: string(debounceSeconds)
  PIPELINE_BACKEND: 'aml'
  BASE_MODEL: baseModel
  TRAIN_PRESET: trainPreset
  TRAIN_EPOCHS: trainEpochs
  TRAIN_LEARNING_RATE: trainLearningRate
  MODEL_NAME: modelName
  SMOKE_PROMPT: smokePrompt
  AML_SUBSCRIPTION_ID: subscription().subscriptionId
  AML_RESOURCE_GROUP: resourceGroup().name
  AML_WORKSPACE: workspaceName
  AML_COMPUTE: computeName
  AML_CPU_INSTANCE_TYPE: cpuInstanceType
  AML_GPU_INSTANCE_TYPE: gpuInstanceType
  AML_ENVIRONMENT_IMAGE: environmentImageOverride
  AML_DATASTORE: datastoreName
  AML_ENDPOINT_NAME: endpointName
  MAX_TRANSIENT_RETRIES: string(maxTransientRetries)
  DEPLOY_TIMEOUT_SECONDS: string(deployTimeoutSeconds)
  DEBOUNCE_MAX_WAIT_SECONDS: string(debounceMaxWaitSeconds)
  QUEUED_TIMEOUT_SECONDS: string(queuedTimeoutSeconds)
  PREPROCESS_TIMEOUT_SECONDS: string(preprocessTimeoutSeconds)
  TRAIN_TIMEOUT_SECONDS: string(trainTimeoutSeconds)
  EVALUATE_TIMEOUT_SECONDS: string(evaluateTimeoutSeconds)
  DOCUMENT_RETRY_SECONDS: string(documentRetrySeconds)
  DOCUMENT_MAX_ATTEMPTS: string(documentMaxAttempts)
  KEEP_RUNS: string(keepRuns)
  SNAPSHOT_RETENTION: string(snapshotRetention)
  PREPROCESS_MAX_DOCUMENT_CHARS: string(preprocessMaxDocumentChars)
  PREPROCESS_MAX_CORPUS_CHARS: string(preprocessMaxCorpusChars)
  PREPROCESS_MAX_CHARS_PER_BYTE: string(preprocessMaxCharsPerByte)
  TRAIN_MAX_STEPS: string(trainMaxSteps)
  TRAIN_MAX_WALL_S: string(trainMaxWallS)
  SWEEP_TRIALS: string(sweepTrials)
  SWEEP_MAX_CONCURRENT_TRIALS: string(sweepMaxConcurrentTrials)
  SWEEP_TIMEOUT_S: string(sweepTimeoutS)
  SWEEP_SPACE: sweepSpace
  SWEEP_RULE: sweepRule
  RUN_WEBHOOK_URL: runWebhookUrl
  RUN_WEBHOOK_TIMEOUT_S: string(runWebhookTimeoutS)
  // Read only by the local backend and the uvicorn-hosted API: empty = unused here (AML jobs get
  // their MLflow tracking URI from AML).
  LOCAL_WORK_DIR: ''
  LOCAL_SCORING_PORTS: ''
  LOCAL_ROUTER_PORT: ''
  LOCAL_API_KEY: ''
  MLFLOW_TRACKING_URI: ''
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    location: location
    tags: tags
    planName: functionPlanName
    functionAppName: functionAppName
    hostStorageAccountName: hostStorage.outputs.accountName
    deploymentContainerName: hostStorage.outputs.deploymentContainerName
    subnetId: network.outputs.functionSubnetId
    functionInsightsName: monitoring.outputs.functionInsightsName
    codeSettings: functionAppSettings
    pythonVersion: pythonVersion
    instanceMemoryMB: functionInstanceMemoryMB
    maximumInstanceCount: functionMaximumInstanceCount
    alwaysReadyHttpInstances: alwaysReadyHttpInstances
  }
}

module aml 'modules/aml.bicep' = {
  name: 'aml'
  params: {
    location: location
    tags: tags
    workspaceName: workspaceName
    workspaceStorageName: workspaceStorageName
    storageSkuName: storageSkuName
    keyVaultName: keyVaultName
    keyVaultRetentionDays: keyVaultRetentionDays
    registryName: registryName
    registrySku: registrySku
    amlInsightsId: monitoring.outputs.amlInsightsId
    computeIdentityName: computeIdentityName
    datastoreName: datastoreName
    dataStorageAccountName: storage.outputs.accountName
    dataContainerName: storage.outputs.dataContainerName
  }
}

module aks 'modules/aks.bicep' = {
  name: 'aks'
  params: {
    location: location
    tags: tags
    clusterName: clusterName
    kubernetesVersion: kubernetesVersion
    skuTier: aksSkuTier
    logAnalyticsId: monitoring.outputs.logAnalyticsId
    systemPoolVmSize: systemPoolVmSize
    systemPoolMaxCount: systemPoolMaxCount
    gpuPoolVmSize: gpuPoolVmSize
    gpuPoolMaxCount: gpuPoolMaxCount
    gpuPoolMinCount: gpuPoolMinCount
    aksSubnetId: network.outputs.aksSubnetId
    osDiskSizeGB: osDiskSizeGB
    enableEncryptionAtHost: enableEncryptionAtHost
    apiServerAuthorizedIpRanges: apiServerAuthorizedIpRanges
    enableContainerInsights: enableContainerInsights
    amlExtensionName: amlExtensionName
    workloadNamespace: workloadNamespace
    scoringExposure: scoringExposure
    scoringSslCname: scoringSslCname
    scoringSslSecretName: scoringSslSecretName
  }
}

// What the UI reads (ui/settings.py names; tests/test_infra.py keeps the two in step).
var uiAppSettings = {
  API_BASE_URL: 'https://${functionApp.outputs.defaultHostName}'
  DataStorage__blobServiceUri: storage.outputs.blobEndpoint
  DATA_CONTAINER: dataContainerName
  AML_SUBSCRIPTION_ID: subscription().subscriptionId
  AML_RESOURCE_GROUP: resourceGroup().name
  AML_WORKSPACE: workspaceName
  AML_ENDPOINT_NAME: endpointName
}

module ui 'modules/ui.bicep' = {
  name: 'ui'
  params: {
    location: location
    tags: tags
    planName: uiPlanName
    siteName: uiAppName
    pythonVersion: pythonVersion
    skuName: uiSkuName
    subnetId: network.outputs.uiSubnetId
    authClientId: uiAuthClientId
    uiSettings: uiAppSettings
    functionAppName: functionApp.outputs.name
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  params: {
    dataStorageAccountName: storage.outputs.accountName
    hostStorageAccountName: hostStorage.outputs.accountName
    dataContainerName: storage.outputs.dataContainerName
    inputsPrefix: inputsPrefix
    processedPrefix: processedPrefix
    runsPrefix: runsPrefix
    functionInsightsName: monitoring.outputs.functionInsightsName
    workspaceName: aml.outputs.workspaceName
    registryName: aml.outputs.registryName
    clusterName: aks.outputs.clusterName
    functionPrincipalId: functionApp.outputs.principalId
    uiPrincipalId: ui.outputs.principalId
    clusterPrincipalId: aks.outputs.clusterPrincipalId
    vnetName: network.outputs.vnetName
    aksSubnetName: aksSubnetName
    computePrincipalId: aml.outputs.computeIdentityPrincipalId
    workspacePrincipalId: aml.outputs.workspacePrincipalId
    deployerPrincipalId: deployerPrincipalId
    deployerPrincipalType: deployerPrincipalType
  }
}

module compute 'modules/compute.bicep' = {
  name: 'compute'
  params: {
    location: location
    workspaceName: aml.outputs.workspaceName
    computeName: computeName
    clusterId: aks.outputs.clusterId
    workloadNamespace: aks.outputs.workloadNamespace
    computeIdentityId: aml.outputs.computeIdentityId
  }
  // The attach needs the workspace's rights on the cluster.
  dependsOn: [
    roles
  ]
}

// Read by infra/deploy.sh for the image build, AML environment, kubectl, publish and Event Grid steps.
output functionAppName string = functionApp.outputs.name
output functionAppHostName string = functionApp.outputs.defaultHostName
output storageAccountName string = storage.outputs.accountName
output dataContainerName string = storage.outputs.dataContainerName
output inputsPrefix string = inputsPrefix
output systemTopicName string = storage.outputs.systemTopicName
output workspaceName string = aml.outputs.workspaceName
output registryName string = aml.outputs.registryName
output registryLoginServer string = aml.outputs.registryLoginServer
output clusterName string = aks.outputs.clusterName
output uiAppName string = ui.outputs.name
output uiHostName string = ui.outputs.defaultHostName
output computeName string = compute.outputs.computeName
output workloadNamespace string = aks.outputs.workloadNamespace
