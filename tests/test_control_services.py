"""Building the control plane's services against storage where the identity may only read blobs."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import ContainerClient

from function_app import services
from function_app.settings import Settings, StorageConnection
from tests.azurite import azurite_connection  # noqa: F401 - session fixture


def refused(status: int):
    def create_container(self, *args, **kwargs):  # what Azure answers an identity without the right
        error = HttpResponseError(message=f"({status}) AuthorizationPermissionMismatch")
        error.status_code = status
        raise error

    return create_container


def test_a_read_only_identity_still_gets_its_services(azurite_connection, monkeypatch, tmp_path):  # noqa: F811
    # In Azure the Function identity is Storage Blob Data Reader on the data container (infra roles.bicep),
    # so creating the container answers 403; the container exists (Bicep made it) and startup goes on.
    monkeypatch.setattr(ContainerClient, "create_container", refused(403))
    settings = Settings(data_container="readonly-data", status_table="readonlystatus", local_work_dir=str(tmp_path))
    built = services.build(settings, StorageConnection(connection_string=azurite_connection))
    assert built.container.container_name == "readonly-data"


def test_other_storage_errors_still_stop_startup(azurite_connection, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setattr(ContainerClient, "create_container", refused(500))
    settings = Settings(data_container="readonly-data", status_table="readonlystatus", local_work_dir=str(tmp_path))
    with pytest.raises(HttpResponseError):
        services.build(settings, StorageConnection(connection_string=azurite_connection))
