// Attaches the AKS cluster (with the AzureML extension installed) to the workspace as a Kubernetes
// compute target. Jobs on it run as the user-assigned compute identity (data + image pulls).

param location string
param workspaceName string
param computeName string
param clusterId string
param workloadNamespace string
param computeIdentityId string

resource workspace 'Microsoft.MachineLearningServices/workspaces@2026-05-01' existing = {
  name: workspaceName
}

resource compute 'Microsoft.MachineLearningServices/workspaces/computes@2026-05-01' = {
  parent: workspace
  name: computeName
  location: location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${computeIdentityId}': {}
    }
  }
  properties: {
    computeType: 'Kubernetes'
    description: 'AKS with the AzureML extension: preprocess, train (GPU), evaluate and online scoring.'
    resourceId: clusterId
    properties: {
      namespace: workloadNamespace
    }
  }
}

output computeName string = compute.name
