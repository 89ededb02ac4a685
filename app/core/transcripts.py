"""Finished transcripts, stored in Redis as one JSON document each, kept ``TRANSCRIPT_TTL``."""

from __future__ import annotations

import json
from typing import Any

from redis import Redis

_TRANSCRIPT = "ytcaption:transcript:{}"


class TranscriptStore:
    def __init__(self, connection: Redis, ttl: int) -> None:
        self.connection = connection
        self.ttl = ttl

    def save(self, record: dict[str, Any]) -> None:
        """Store (or overwrite, when a job runs again) the transcript ``record``."""
        key = _TRANSCRIPT.format(record["transcription_id"])
        self.connection.set(key, json.dumps(record, ensure_ascii=False), ex=self.ttl)

    def get(self, transcription_id: str) -> dict[str, Any] | None:
        raw = self.connection.get(_TRANSCRIPT.format(transcription_id))
        return json.loads(raw) if raw else None
