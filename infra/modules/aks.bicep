// The AKS cluster AML runs on: a system pool (AML extension, CPU steps, CPU scoring) and a GPU pool
// for training, the Microsoft.AzureML.Kubernetes extension, and the namespace the attached compute
// runs workloads in. Nodes live in our own subnet so the scoring router's internal load balancer is
// reachable from the Function app and the UI (modules/network.bicep).

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

@description('GPU nodes kept running. The extension\'s Volcano scheduler (gang plugin) never creates a pod the cluster autoscaler could scale up for, so at 0 the train step waits forever; see docs/deploy.md.')
@minValue(0)
param gpuPoolMinCount int

@description('Subnet of the node pools (modules/network.bicep).')
param aksSubnetId string
param osDiskSizeGB int

@description('Host-based encryption of temp and cache disks; needs the subscription feature Microsoft.Compute/EncryptionAtHost.')
param enableEncryptionAtHost bool

@description('CIDRs allowed to reach the API server; empty = any. AML needs its control-plane ranges here if set.')
param apiServerAuthorizedIpRanges array

param enableContainerInsights bool
param amlExtensionName string
param workloadNamespace string

@description('internal: the scoring router behind an internal load balancer in the nodes\' subnet, HTTP inside the VNet only. publicTls: a public load balancer serving HTTPS with your certificate (scoringSslCname + scoringSslSecretName).')
@allowed([
  'internal'
  'publicTls'
])
param scoringExposure string

@description('CNAME of the scoring endpoint certificate (publicTls only).')
param scoringSslCname string

@description('Kubernetes secret in the azureml namespace holding cert.pem and key.pem (publicTls only).')
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
        vnetSubnetID: aksSubnetId
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
        count: gpuPoolMinCount
        enableAutoScaling: true
        minCount: gpuPoolMinCount
        maxCount: max(gpuPoolMaxCount, gpuPoolMinCount)
        maxPods: 110
        osDiskType: 'Ephemeral'
        osDiskSizeGB: osDiskSizeGB
        enableEncryptionAtHost: enableEncryptionAtHost
        vnetSubnetID: aksSubnetId
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

// The settings `az k8s-extension create` adds for this extension type (Azure/azure-cli-extensions
// src/k8s-extension/azext_k8s_extension/partner_extensions/AzureMLKubernetes.py) and Microsoft's ARM
// template for installing it without the CLI (Azure/AML-Kubernetes files/deployextension.json);
// tests/test_infra.py checks every key of that template is here.
var extensionSettings = {
  enableTraining: 'True'
  enableInference: 'True'
  // DevTest = one router replica (inferenceRouterHA False), as the CLI handler sets it.
  clusterPurpose: 'DevTest'
  cluster_name: cluster.id
  clusterId: cluster.id
  cluster_name_friendly: cluster.name
  'prometheus.prometheusSpec.externalLabels.cluster_name': cluster.id
  location: location
  jobSchedulerLocation: location
  domain: '${location}.cloudapp.azure.com'
  // Relay and Service Bus are for Arc clusters; AKS talks to AML directly.
  'servicebus.enabled': 'false'
  'relayserver.enabled': 'false'
  'nginxIngress.enabled': 'true'
  installNvidiaDevicePlugin: 'True'
  installPromOp: 'True'
  installVolcano: 'True'
  installDcgmExporter: 'False'
  inferenceRouterServiceType: 'LoadBalancer'
  // One router replica: HA wants three nodes, and the system pool starts with one.
  inferenceRouterHA: 'False'
}

// internal: HTTP, but only inside the VNet (internal load balancer, azure provider). publicTls: HTTPS on a
// public IP with the certificate in scoringSslSecretName. Never plain HTTP on a public IP.
var scoringSettings = scoringExposure == 'internal' ? {
  allowInsecureConnections: 'True'
  internalLoadBalancerProvider: 'azure'
  'scoringFe.serviceType.internalLoadBalancer': 'True'
} : {
  allowInsecureConnections: 'False'
  internalLoadBalancerProvider: ''
  'scoringFe.serviceType.internalLoadBalancer': 'False'
  sslCname: scoringSslCname
  'scoringFe.sslSecret': scoringSslSecretName
}

// Installs the AML training and inference operators (volcano, azureml-fe router, NVIDIA device plugin).
resource amlExtension 'Microsoft.KubernetesConfiguration/extensions@2025-03-01' = {
  name: amlExtensionName
  scope: cluster
  // As the template and the CLI create it: the extension's own identity.
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    extensionType: 'Microsoft.AzureML.Kubernetes'
    autoUpgradeMinorVersion: true
    releaseTrain: 'stable'
    scope: {
      cluster: {
        releaseNamespace: 'azureml'
      }
    }
    configurationSettings: union(extensionSettings, scoringSettings)
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
output clusterPrincipalId string = cluster.identity.principalId
output clusterId string = cluster.id
output extensionName string = amlExtension.name
output workloadNamespace string = namespace.name
