"""Blob and Table clients for the DataStorage connection (connection string or managed identity)."""

from __future__ import annotations

from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient

from function_app.settings import StorageConnection


def _credential():
    # Imported here: azure-identity is only needed (and only slow to import) for identity-based access.
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def blob_service(conn: StorageConnection) -> BlobServiceClient:
    if conn.connection_string:
        return BlobServiceClient.from_connection_string(conn.connection_string)
    return BlobServiceClient(conn.blob_service_uri, credential=_credential())


def table_service(conn: StorageConnection) -> TableServiceClient:
    if conn.connection_string:
        return TableServiceClient.from_connection_string(conn.connection_string)
    return TableServiceClient(conn.table_service_uri, credential=_credential())
