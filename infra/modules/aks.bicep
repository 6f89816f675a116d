// The AKS cluster AML runs on: a system pool (AML extension, CPU steps, CPU scoring) and a GPU pool
// that autoscales from zero for training, the Microsoft.AzureML.Kubernetes extension, and the
// namespace the attached compute runs workloads in.

param location string
param tags object
param clusterName string
param kubernetesVersion string

@description('AKS control-plane tier: Free (no SLA) or Standard (uptime SLA, billed per cluster hour).')
param skuTier string

param logAnalyticsId string

param systemPoolVmSize string
param systemPoolMaxCount int
param gpuPoolVmSize string
param gpuPoolMaxCount int
param osDiskSizeGB int

@description('Host-based encryption of temp and cache disks; needs the subscription feature Microsoft.Compute/EncryptionAtHost.')
param enableEncryptionAtHost bool

@description('CIDRs allowed to reach the API server; empty = any. AML needs its control-plane ranges here if set.')
param apiServerAuthorizedIpRanges array

param enableContainerInsights bool
param amlExtensionName string
param workloadNamespace string

@description('Serve scoring over plain HTTP (key auth still required). Set false with a TLS secret for HTTPS.')
param allowInsecureScoring bool

@description('CNAME of the scoring endpoint certificate (HTTPS only).')
param scoringSslCname string

@description('Kubernetes secret in the azureml namespace holding cert.pem and key.pem (HTTPS only).')
param scoringSslSecretName string

// GPU nodes accept only pods that request nvidia.com/gpu (AKS's ExtendedResourceToleration admission
// adds the matching toleration to exactly those, i.e. the GPU instance type's pods) plus DaemonSets
// that tolerate it (the NVIDIA device plugin), so CPU steps never keep a GPU node alive.
// The pools' node labels are what infra/k8s/instance-types.yaml selects on.
var gpuTaint = 'nvidia.com/gpu=present:NoSchedule'

resource cluster 'Microsoft.ContainerService/managedClusters@2026-05-01' = {
  name: clusterName
  location: location
  tags: tags
  // AML supports only a system-assigned cluster identity.
  identity: {
    type: 'SystemAssigned'
  }
  sku: {
    name: 'Base'
    tier: skuTier
  }
  properties: {
    // checkov:skip=CKV_AZURE_141: Azure ML does not support AKS clusters with local accounts disabled (AML Kubernetes extension limitation); people and the deploy script still sign in with Entra ID + Azure RBAC.
    // checkov:skip=CKV_AZURE_6: authorized IP ranges are a parameter (apiServerAuthorizedIpRanges); AML's control plane needs its regional ranges allowed, so the default stays open.
    // checkov:skip=CKV_AZURE_227: encryption at host needs the EncryptionAtHost subscription feature and a supporting VM size; it is the enableEncryptionAtHost parameter.
    // checkov:skip=CKV_AZURE_8: the Kubernetes dashboard add-on is retired on every supported AKS version, so there is nothing to disable.
    // checkov:skip=CKV_AZURE_172: the Secrets Store CSI driver add-on is not installed; workloads use managed identities, not mounted secrets.
    kubernetesVersion: empty(kubernetesVersion) ? null : kubernetesVersion
    dnsPrefix: clusterName
    enableRBAC: true
    disableLocalAccounts: false
    aadProfile: {
      managed: true
      enableAzureRBAC: true
    }
    apiServerAccessProfile: {
      authorizedIPRanges: apiServerAuthorizedIpRanges
    }
    autoUpgradeProfile: {
      upgradeChannel: 'patch'
      nodeOSUpgradeChannel: 'NodeImage'
    }
    networkProfile: {
      networkPlugin: 'azure'
      networkPluginMode: 'overlay'
      networkDataplane: 'cilium'
      networkPolicy: 'cilium'
      loadBalancerSku: 'standard'
      outboundType: 'loadBalancer'
    }
    securityProfile: {
      // GPU images are large; clean the unused ones off the nodes.
      imageCleaner: {
        enabled: true
        intervalHours: 48
      }
    }
    addonProfiles: {
      omsagent: {
        enabled: enableContainerInsights
        config: {
          logAnalyticsWorkspaceResourceID: logAnalyticsId
          useAADAuth: 'true'
        }
      }
    }
    agentPoolProfiles: [
      {
        name: 'system'
        mode: 'System'
        osType: 'Linux'
        type: 'VirtualMachineScaleSets'
        vmSize: systemPoolVmSize
        count: 1
        enableAutoScaling: true
        minCount: 1
        maxCount: systemPoolMaxCount
        maxPods: 110
        osDiskType: 'Ephemeral'
        osDiskSizeGB: osDiskSizeGB
        enableEncryptionAtHost: enableEncryptionAtHost
        nodeLabels: {
          'gpt2-pdf/pool': 'cpu'
        }
      }
      {
        name: 'gpu'
        mode: 'User'
        osType: 'Linux'
        type: 'VirtualMachineScaleSets'
        vmSize: gpuPoolVmSize
        // Scale to zero: a GPU node exists only while a training pod waits for or uses it.
        count: 0
        enableAutoScaling: true
        minCount: 0
        maxCount: gpuPoolMaxCount
        maxPods: 110
        osDiskType: 'Ephemeral'
        osDiskSizeGB: osDiskSizeGB
        enableEncryptionAtHost: enableEncryptionAtHost
        gpuProfile: {
          driver: 'Install'
        }
        nodeTaints: [
          gpuTaint
        ]
        nodeLabels: {
          'gpt2-pdf/pool': 'gpu'
        }
      }
    ]
  }
}

// Container insights with Entra ID auth: the add-on above ships the agent, this rule says what it
// collects (the default set, container logs v2) and where it goes.
resource containerInsightsRule 'Microsoft.Insights/dataCollectionRules@2024-03-11' = if (enableContainerInsights) {
  name: 'MSCI-${location}-${clusterName}'
  location: location
  tags: tags
  kind: 'Linux'
  properties: {
    dataSources: {
      extensions: [
        {
          name: 'ContainerInsightsExtension'
          extensionName: 'ContainerInsights'
          streams: [
            'Microsoft-ContainerInsights-Group-Default'
          ]
          extensionSettings: {
            dataCollectionSettings: {
              interval: '1m'
              namespaceFilteringMode: 'Off'
              enableContainerLogV2: true
            }
          }
        }
      ]
    }
    destinations: {
      logAnalytics: [
        {
          name: 'ciworkspace'
          workspaceResourceId: logAnalyticsId
        }
      ]
    }
    dataFlows: [
      {
        streams: [
          'Microsoft-ContainerInsights-Group-Default'
        ]
        destinations: [
          'ciworkspace'
        ]
      }
    ]
  }
}

resource containerInsightsAssociation 'Microsoft.Insights/dataCollectionRuleAssociations@2024-03-11' = if (enableContainerInsights) {
  name: 'ContainerInsightsExtension'
  scope: cluster
  properties: {
    dataCollectionRuleId: containerInsightsRule.id
    description: 'Container insights for the AML cluster.'
  }
}

var scoringTls = allowInsecureScoring ? {} : {
  sslCname: scoringSslCname
  sslSecret: scoringSslSecretName
}

// Installs the AML training and inference operators (volcano, azureml-fe router, NVIDIA device plugin).
resource amlExtension 'Microsoft.KubernetesConfiguration/extensions@2025-03-01' = {
  name: amlExtensionName
  scope: cluster
  properties: {
    extensionType: 'Microsoft.AzureML.Kubernetes'
    autoUpgradeMinorVersion: true
    releaseTrain: 'stable'
    scope: {
      cluster: {
        releaseNamespace: 'azureml'
      }
    }
    configurationSettings: union({
      enableTraining: 'True'
      enableInference: 'True'
      inferenceRouterServiceType: 'LoadBalancer'
      // One router replica: HA wants three nodes, and the system pool starts with one.
      inferenceRouterHA: 'False'
      allowInsecureConnections: allowInsecureScoring ? 'True' : 'False'
      installNvidiaDevicePlugin: 'True'
      installPromOp: 'True'
      installVolcano: 'True'
    }, scoringTls)
  }
}

// Where AML runs the jobs and scoring pods; AML does not create the namespace it is attached to.
resource namespace 'Microsoft.ContainerService/managedClusters/managedNamespaces@2026-05-01' = {
  parent: cluster
  name: workloadNamespace
  location: location
  tags: tags
  properties: {
    adoptionPolicy: 'IfIdentical'
    deletePolicy: 'Delete'
    // The azureml-fe router in the azureml namespace must reach the scoring pods, and jobs reach storage.
    defaultNetworkPolicy: {
      ingress: 'AllowAll'
      egress: 'AllowAll'
    }
  }
}

output clusterName string = cluster.name
output clusterId string = cluster.id
output extensionName string = amlExtension.name
output workloadNamespace string = namespace.name
