// The web UI (ui/app.py, Streamlit) on App Service for Linux: Microsoft Entra sign-in in front of every
// page (App Service authentication, "Easy Auth"), a system-assigned identity for storage and scoring
// tokens, and VNet integration to reach the scoring router's internal load balancer. Its rights are in
// modules/roles.bicep: write only under inputs/ of the data container, and get aml_token tokens for the
// online endpoint. The code is deployed by infra/deploy.sh (--steps ui).

param location string
param tags object
param planName string
param siteName string
param pythonVersion string
param skuName string

@description('Subnet for regional VNet integration (delegated to Microsoft.Web/serverFarms).')
param subnetId string

@description('Application (client) id of the Entra app registration for sign-in; infra/deploy.sh creates it. Empty = nobody can sign in yet.')
param authClientId string

@description('Environment of the UI (ui/settings.py names), built in main.bicep.')
param uiSettings object

@description('The Function app (its default function key lets the UI read the status API).')
param functionAppName string

resource functionApp 'Microsoft.Web/sites@2025-03-01' existing = {
  name: functionAppName
}

resource plan 'Microsoft.Web/serverfarms@2025-03-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'linux'
  sku: {
    name: skuName
  }
  // checkov:skip=CKV_AZURE_211: a small team's admin UI on one Basic instance; scale the plan (uiSkuName) when more people use it.
  // checkov:skip=CKV_AZURE_212: one instance is enough for the UI; failover is a redeploy, state lives in storage and the status table.
  // checkov:skip=CKV_AZURE_225: zone redundancy needs Premium plans; the UI holds no state.
  properties: {
    reserved: true
  }
}

// The UI's own settings plus what App Service needs to build and start it.
var runtimeSettings = {
  SCM_DO_BUILD_DURING_DEPLOYMENT: 'true'
  WEBSITES_PORT: '8000'
  FUNCTION_KEY: listKeys('${functionApp.id}/host/default', '2025-03-01').functionKeys.default
}

resource site 'Microsoft.Web/sites@2025-03-01' = {
  name: siteName
  location: location
  tags: tags
  kind: 'app,linux'
  identity: {
    type: 'SystemAssigned'
  }
  // checkov:skip=CKV_AZURE_212: one Basic instance is enough for a small team's admin UI; scale the plan (uiSkuName) for more.
  // checkov:skip=CKV_AZURE_222: people reach the UI from their browsers; every request must pass Entra sign-in (authsettingsV2 below).
  // checkov:skip=CKV_AZURE_17: browsers sign in with Entra ID, not client certificates.
  // checkov:skip=CKV_AZURE_213: one instance: a health check could only restart it, which App Service does on a failed start anyway.
  properties: {
    // checkov:skip=CKV_AZURE_88: the UI keeps no files; uploads go straight to Blob storage.
    serverFarmId: plan.id
    httpsOnly: true
    clientAffinityEnabled: true // Streamlit keeps each session's state on the instance serving its websocket
    publicNetworkAccess: 'Enabled'
    virtualNetworkSubnetId: subnetId
    siteConfig: {
      linuxFxVersion: 'PYTHON|${pythonVersion}'
      appCommandLine: 'python -m streamlit run ui/app.py --server.port 8000 --server.address 0.0.0.0 --server.headless true --browser.gatherUsageStats false --client.toolbarMode minimal'
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      webSocketsEnabled: true
      alwaysOn: true
      remoteDebuggingEnabled: false
      vnetRouteAllEnabled: false // only private addresses (the scoring router) go through the VNet
      httpLoggingEnabled: true
      detailedErrorLoggingEnabled: true
      requestTracingEnabled: true
      appSettings: [for setting in items(union(uiSettings, runtimeSettings)): {
        name: setting.key
        value: setting.value
      }]
    }
  }
}

// Entra sign-in before any page: unauthenticated browsers are sent to the Microsoft login page.
// Without a client secret App Service signs people in with the id_token (implicit) flow, which the app
// registration allows (infra/deploy.sh: --enable-id-token-issuance).
resource auth 'Microsoft.Web/sites/config@2025-03-01' = {
  parent: site
  name: 'authsettingsV2'
  // checkov:skip=CKV_AZURE_13: this resource IS the App Service authentication of the site; checkov reads a sites/config child as a site.
  // checkov:skip=CKV_AZURE_63: logging is set on the site (siteConfig.httpLoggingEnabled); this is its auth config only.
  // checkov:skip=CKV_AZURE_65: set on the site (siteConfig.detailedErrorLoggingEnabled); this is its auth config only.
  // checkov:skip=CKV_AZURE_66: set on the site (siteConfig.requestTracingEnabled); this is its auth config only.
  properties: {
    // checkov:skip=CKV_AZURE_222: network access is the site setting, justified there; this is its auth config only.
    // checkov:skip=CKV_AZURE_80: a Python app, no .NET; this is the site auth config only.
    // checkov:skip=CKV_AZURE_88: the site setting, justified there; this is its auth config only.
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'RedirectToLoginPage'
      redirectToProvider: 'azureactivedirectory'
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: authClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            authClientId
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2025-03-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2025-03-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = site.name
output principalId string = site.identity.principalId
output defaultHostName string = site.properties.defaultHostName
