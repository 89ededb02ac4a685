"""Finished transcripts, stored in Redis as one JSON document each, kept ``TRANSCRIPT_TTL``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from redis import Redis
from redis.client import Pipeline

_TRANSCRIPT = "ytcaption:transcript:{}"


class TranscriptStore:
    def __init__(self, connection: Redis, ttl: int) -> None:
        self.connection = connection
        self.ttl = ttl

    def save(self, record: dict[str, Any], pipeline: Pipeline | None = None) -> None:
        """Store (or overwrite, when a job runs again) the transcript ``record`` (in ``pipeline``, if given)."""
        key = _TRANSCRIPT.format(record["transcription_id"])
        connection = pipeline if pipeline is not None else self.connection
        connection.set(key, json.dumps(record, ensure_ascii=False), ex=self.ttl)

    def get(self, transcription_id: str) -> dict[str, Any] | None:
        raw = self.connection.get(_TRANSCRIPT.format(transcription_id))
        return json.loads(raw) if raw else None


def chapter_of_each(chapter_starts: Sequence[float], segment_starts: Iterable[float]) -> list[int]:
    """For each segment start, in time order, the index of its chapter: the last one that starts at or
    before it (``chapter_starts`` sorted), or -1 for a segment before the first chapter."""
    indexes, current = [], -1
    for start in segment_starts:
        while current + 1 < len(chapter_starts) and chapter_starts[current + 1] <= start:
            current += 1
        indexes.append(current)
    return indexes


def chapters_with_segments(chapters: Sequence[Mapping[str, Any]],
                           segments: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each chapter (``title``, ``start``, ``end``) with the ids of its first and last segments.

    A segment belongs to the chapter it starts in (``chapter_of_each``), so a segment in a gap
    between two chapters stays with the one before, and one past the last chapter's end with the
    last. Segments are in time order, so each chapter holds a contiguous run,
    ``segments[first_segment:last_segment + 1]``; a chapter without any has both ``None``.
    Segments before the first chapter belong to none.
    """
    ordered = sorted(chapters, key=lambda chapter: chapter["start"])
    result = [{"title": chapter["title"], "start": chapter["start"], "end": chapter["end"],
               "first_segment": None, "last_segment": None} for chapter in ordered]
    owners = chapter_of_each([chapter["start"] for chapter in ordered], (segment["start"] for segment in segments))
    for segment, owner in zip(segments, owners):
        if owner >= 0:
            chapter = result[owner]
            if chapter["first_segment"] is None:
                chapter["first_segment"] = segment["id"]
            chapter["last_segment"] = segment["id"]
    return result
