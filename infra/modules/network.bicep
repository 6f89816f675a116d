// One virtual network for what must reach the scoring router privately: the AKS nodes (the AzureML
// extension's azureml-fe sits behind an INTERNAL load balancer in their subnet), the Function app
// (smoke tests the new deployment) and the web UI (chat), both through regional VNet integration.
// Nothing here is reachable from the internet; each subnet has its own network security group.

param location string
param tags object
param vnetName string
param addressPrefix string
param aksSubnetPrefix string
param functionSubnetPrefix string
param uiSubnetPrefix string

var subnets = [
  {
    name: 'aks-nodes'
    prefix: aksSubnetPrefix
    delegation: ''
  }
  {
    // Flex Consumption integrates with a subnet delegated to Microsoft.App/environments.
    name: 'function-app'
    prefix: functionSubnetPrefix
    delegation: 'Microsoft.App/environments'
  }
  {
    name: 'web-ui'
    prefix: uiSubnetPrefix
    delegation: 'Microsoft.Web/serverFarms'
  }
]

resource securityGroups 'Microsoft.Network/networkSecurityGroups@2024-05-01' = [for subnet in subnets: {
  name: '${vnetName}-${subnet.name}-nsg'
  location: location
  tags: tags
  properties: {
    // The platform's default rules: traffic within the VNet and from Azure load balancers is allowed,
    // anything else inbound from the internet is denied.
    securityRules: []
  }
}]

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: vnetName
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [for (subnet, i) in subnets: {
      name: subnet.name
      properties: {
        addressPrefix: subnet.prefix
        networkSecurityGroup: {
          id: securityGroups[i].id
        }
        delegations: empty(subnet.delegation) ? [] : [
          {
            name: subnet.name
            properties: {
              serviceName: subnet.delegation
            }
          }
        ]
      }
    }]
  }
}

output vnetName string = vnet.name
output aksSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, subnets[0].name)
output functionSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, subnets[1].name)
output uiSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, subnets[2].name)
