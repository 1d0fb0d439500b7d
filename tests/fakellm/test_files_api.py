"""The simulator's Files API, driven by the openai package against a real subprocess."""

from __future__ import annotations

import io
from collections.abc import Iterator

import openai
import pytest
from simsupport import module_server, sdk_client

from fakellm.testing import SimServer


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimServer]:
    """One simulator subprocess, default config, shared by this module's tests."""
    yield from module_server(tmp_path_factory.mktemp("fakellm-files"))


@pytest.fixture()
def client(sim: SimServer) -> openai.OpenAI:
    """An OpenAI SDK client pointed at the simulator, with no retries, on a simulator with no files."""
    return sdk_client(sim)


def test_a_file_is_uploaded_listed_downloaded_and_deleted(client: openai.OpenAI) -> None:
    data = b'{"custom_id": "a"}\n{"custom_id": "b"}\n'
    uploaded = client.files.create(file=("requests.jsonl", io.BytesIO(data)), purpose="batch")
    assert uploaded.id.startswith("file-") and uploaded.object == "file"
    assert (uploaded.filename, uploaded.purpose, uploaded.bytes) == ("requests.jsonl", "batch", len(data))
    assert client.files.retrieve(uploaded.id) == uploaded
    assert client.files.content(uploaded.id).content == data
    other = client.files.create(file=("notes.txt", io.BytesIO(b"x")), purpose="user_data")
    assert [f.id for f in client.files.list()] == [other.id, uploaded.id]
    assert [f.id for f in client.files.list(purpose="batch")] == [uploaded.id]
    assert [f.id for f in client.files.list(order="asc", limit=1)] == [uploaded.id, other.id]  # pages through
    deleted = client.files.delete(uploaded.id)
    assert (deleted.id, deleted.deleted) == (uploaded.id, True)
    with pytest.raises(openai.NotFoundError, match=uploaded.id):
        client.files.retrieve(uploaded.id)
    with pytest.raises(openai.NotFoundError, match="No such File object: file-missing"):
        client.files.content("file-missing")


def test_bad_uploads_name_the_field(client: openai.OpenAI, sim: SimServer) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("r.jsonl", io.BytesIO(b"{}")), purpose="homework")  # type: ignore[arg-type]
    assert caught.value.param == "purpose" and "'homework'" in caught.value.message
    status, _, reply = sim.call("POST", "/v1/files", {"purpose": "batch"})
    assert status == 400 and reply["error"]["param"] == "file"
    assert "multipart/form-data" in reply["error"]["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.list(limit=0)
    assert caught.value.param == "limit"
