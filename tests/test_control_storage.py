"""The DataStorage connection: a connection string locally, managed identity in Azure."""

from __future__ import annotations

import pytest
from azure.identity import DefaultAzureCredential

from function_app.settings import StorageConnection
from function_app.storage import blob_service, table_service
from local_stack.azurite import AzuritePorts


def test_identity_based_connection_uses_the_service_uris_and_default_credential() -> None:
    conn = StorageConnection.from_env(
        {
            "DataStorage__blobServiceUri": "https://gpt2data.blob.core.windows.net",
            "DataStorage__tableServiceUri": "https://gpt2data.table.core.windows.net",
        }
    )
    blobs, tables = blob_service(conn), table_service(conn)
    assert blobs.url.startswith("https://gpt2data.blob.core.windows.net")
    assert tables.url.startswith("https://gpt2data.table.core.windows.net")
    assert isinstance(blobs.credential, DefaultAzureCredential)


def test_connection_string_wins_for_azurite() -> None:
    conn = StorageConnection.from_env({"DataStorage": AzuritePorts(1, 2, 3).connection_string()})
    assert blob_service(conn).url.startswith("http://127.0.0.1:1/devstoreaccount1")
    assert table_service(conn).url.startswith("http://127.0.0.1:3/devstoreaccount1")


def test_missing_storage_settings_are_named() -> None:
    with pytest.raises(ValueError, match="DataStorage__blobServiceUri") as err:
        StorageConnection.from_env({"DataStorage__blobServiceUri": "https://x.blob.core.windows.net"})
    assert "DataStorage__tableServiceUri" in str(err.value)
