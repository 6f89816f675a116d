// Log Analytics plus two Application Insights components on it: one for the Function app
// (Entra ID ingestion only) and one for the AML workspace, whose online deployments log with the
// component's connection string and so need local auth.

param location string
param tags object
param logAnalyticsName string
param functionInsightsName string
param amlInsightsName string

@description('Daily ingestion cap in GB; -1 = no cap. A cap stops ingestion for the rest of the day.')
param dailyQuotaGb int

param retentionInDays int

resource logs 'Microsoft.OperationalInsights/workspaces@2025-07-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    workspaceCapping: {
      dailyQuotaGb: dailyQuotaGb
    }
  }
}

resource functionInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: functionInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    IngestionMode: 'LogAnalytics'
    // The Function app sends telemetry with its managed identity (Monitoring Metrics Publisher).
    DisableLocalAuth: true
  }
}

resource amlInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: amlInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    IngestionMode: 'LogAnalytics'
  }
}

output logAnalyticsId string = logs.id
output functionInsightsName string = functionInsights.name
output functionInsightsConnectionString string = functionInsights.properties.ConnectionString
output amlInsightsId string = amlInsights.id
