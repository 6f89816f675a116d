"""The Blob container the UI uploads into: Azurite or a key-based account by connection string, else
the account URL with DefaultAzureCredential (the app's managed identity in Azure; no secret anywhere)."""

from __future__ import annotations

from azure.storage.blob import ContainerClient

from ui.settings import SettingsError, UiSettings

# Someone is waiting on the page: two quick retries, not the SDK's default of about a minute and a half
# of backoff before saying that storage is unreachable.
_RETRY = {"retry_total": 2, "initial_backoff": 0.5, "increment_base": 1, "random_jitter_range": 0.5}


def container_client(settings: UiSettings) -> ContainerClient:
    if settings.storage_connection:
        return ContainerClient.from_connection_string(settings.storage_connection, settings.data_container, **_RETRY)
    if settings.storage_account_url:
        # Imported here: azure-identity is only needed, and only pays its import time, in Azure.
        from azure.identity import DefaultAzureCredential

        return ContainerClient(
            settings.storage_account_url, settings.data_container, credential=DefaultAzureCredential(), **_RETRY
        )
    raise SettingsError(
        "Uploads need the storage account: set DataStorage to a connection string (Azurite's "
        "locally) or DataStorage__blobServiceUri to the account's blob URL (Azure)."
    )
