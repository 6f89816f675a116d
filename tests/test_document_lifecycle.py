"""Document lifecycle on a real Azurite: deletes (API or elsewhere), renames and overwrites are followed;
a removed document leaves later runs, its cached text and, with retention, old snapshots."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from function_app import manifests
from function_app import run_states as rs
from function_app.api import api
from tests.azurite import azurite_connection  # noqa: F401 - session fixture
from tests.contract_samples import name_snapshot, write_snapshot_blobs
from tests.control_env import ControlEnv, api_env  # noqa: F401 - fixture


@pytest.fixture
def env(api_env: ControlEnv) -> ControlEnv:
    return api_env


KEY = {"x-functions-key": "s3cret"}


def _sha(env: ControlEnv, name: str) -> str:
    return next(d["sha256"] for d in env.store.documents() if d["name"] == name)


def _cache_entries(env: ControlEnv) -> list[str]:
    return sorted(b.name for b in env.container.list_blobs(name_starts_with=manifests.CACHE))


def test_deleting_through_the_api_deletes_the_blob_its_cached_text_and_leaves_later_runs(env: ControlEnv) -> None:
    env.upload("a.pdf", b"%PDF-1.4 a")
    env.upload("b.pdf", b"%PDF-1.4 b")
    first = env.settle(after_s=1)
    assert first.state == rs.DEPLOYED and first.documents == ["a.pdf", "b.pdf"]
    sha_a = _sha(env, "a.pdf")
    for name in (f"{sha_a}.json", f"{sha_a}.limits-1a2b.json", f"{_sha(env, 'b.pdf')}.json"):
        env.container.upload_blob(manifests.CACHE + name, b"{}")  # what preprocess cached for each

    client = TestClient(api)
    assert client.delete("/api/documents/a.pdf").status_code == 401  # state-changing: wants the key
    answer = client.delete("/api/documents/a.pdf", headers=KEY)

    assert answer.status_code == 200 and answer.json()["state"] == "removed"
    assert not env.container.get_blob_client("inputs/a.pdf").exists()
    assert [d["name"] for d in client.get("/api/documents").json()["documents"]] == ["b.pdf"]
    assert _cache_entries(env) == [manifests.CACHE + f"{_sha(env, 'b.pdf')}.json"]
    assert client.delete("/api/documents/a.pdf", headers=KEY).status_code == 404
    assert client.post("/api/retrain", headers=KEY).status_code == 202
    assert env.settle(after_s=120).documents == ["b.pdf"]


def test_deletes_and_renames_made_elsewhere_are_followed_and_overwrites_are_new_versions(env: ControlEnv) -> None:
    env.upload("a.pdf", b"%PDF-1.4 a")
    env.upload("b.pdf", b"%PDF-1.4 b")
    env.upload("c.pdf", b"%PDF-1.4 c")
    env.settle(after_s=1)
    env.container.delete_blob("inputs/a.pdf")  # deleted in the portal
    env.upload("renamed b.pdf", b"%PDF-1.4 b")  # renamed: a copy under the new name, the old one deleted
    env.container.delete_blob("inputs/b.pdf")
    env.upload("c.pdf", b"%PDF-1.4 c, second edition")  # overwritten with new content

    run = env.settle(after_s=120)

    assert run.documents == ["c.pdf", "renamed b.pdf"] and run.new_documents == ["c.pdf"]
    versions = {d["name"]: d["version"] for d in env.store.documents()}
    assert versions == {"c.pdf": 2, "renamed b.pdf": 1}


def test_retrain_over_no_present_document_is_refused(env: ControlEnv) -> None:
    env.upload("a.pdf", b"%PDF-1.4 a")
    env.settle(after_s=1)
    env.container.delete_blob("inputs/a.pdf")  # no tick since: the table still lists it

    answer = TestClient(api).post("/api/retrain", headers=KEY)

    assert answer.status_code == 409 and "holds no document" in answer.json()["detail"]
    assert env.store.current().active_run_id == ""


def test_retention_keeps_the_newest_snapshots_and_the_serving_models(env: ControlEnv) -> None:
    def snapshot(stem: str) -> None:  # what a run's preprocess writes
        write_snapshot_blobs(env.container, f"{stem}.txt", {"a.pdf": ("a" * 64, "ok", [])})

    env.upload("a.pdf", b"%PDF-1.4 a")
    snapshot("combined_data_20270101_120000")
    name_snapshot(env.container, env.tick(after_s=1).id, "combined_data_20270101_120000.txt")
    served = env.settle(after_s=1)
    serving = env.store.current().serving_snapshot
    assert serving == served.snapshot == "combined_data_20270101_120000.txt"
    stems = [f"processed/combined_data_2027010{i}_120000" for i in range(2, 6)]  # four later runs' snapshots
    for stem in stems:
        snapshot(stem.removeprefix("processed/"))

    env.orchestrator.settings = env.settings.model_copy(update={"snapshot_retention": 2})
    env.tick(after_s=120)  # no run active: retention applies

    left = sorted(b.name for b in env.container.list_blobs(name_starts_with="processed/combined_data_"))
    kept = [manifests.manifest_name(serving), "processed/" + serving] + [
        name for stem in stems[-2:] for name in (stem + ".manifest.json", stem + ".txt")
    ]
    assert left == sorted(kept)
