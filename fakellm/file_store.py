"""Uploaded and generated files, kept in memory."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from fakellm.errors import ApiError, not_found

# The purposes OpenAI accepts on upload; `batch_output` files are only ever made by a batch.
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")


@dataclass(frozen=True)
class StoredFile:
    """One file: its bytes and what the Files API says about it."""

    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def as_json(self) -> dict[str, Any]:
        """The OpenAI `file` object."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }


@dataclass
class FileStore:
    """Every file of one simulator, by id, in the order they were made."""

    files: dict[str, StoredFile] = field(default_factory=dict)

    def add(self, filename: str, purpose: str, data: bytes) -> StoredFile:
        """Store a new file and return it."""
        stored = StoredFile("file-" + os.urandom(12).hex(), filename, purpose, data, int(time.time()))
        self.files[stored.id] = stored
        return stored

    def get(self, file_id: str, param: str | None = None) -> StoredFile:
        """The file with this id; a 404 naming it if there is none."""
        stored = self.files.get(file_id)
        if stored is None:
            raise not_found("File", file_id, param)
        return stored

    def delete(self, file_id: str) -> StoredFile:
        """Remove and return the file with this id."""
        stored = self.get(file_id)
        del self.files[file_id]
        return stored


def check_purpose(purpose: str) -> str:
    """The upload purpose, if OpenAI accepts it; a 400 naming the field otherwise."""
    if purpose not in UPLOAD_PURPOSES:
        choices = ", ".join(repr(p) for p in UPLOAD_PURPOSES)
        raise ApiError(400, f"Invalid 'purpose': {purpose!r}; expected one of {choices}.", "purpose")
    return purpose
