"""Render a stored transcript as json, txt, srt or vtt.

Pure functions over the transcript record (see ``app.core.transcripts``), so the API renders
formats without importing anything from the worker's ML stack.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from app.core.schemas import Transcript, from_epoch

Segment = Mapping[str, Any]


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _cues(segments: Sequence[Segment]) -> list[tuple[float, float, str]]:
    """Segments with text, their end never before their start."""
    cues = []
    for segment in segments:
        text = " ".join(str(segment["text"]).split())
        if text:
            start = float(segment["start"])
            cues.append((start, max(start, float(segment["end"])), text))
    return cues


def to_srt(segments: Sequence[Segment]) -> str:
    blocks = [
        f"{index}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n{text}\n"
        for index, (start, end, text) in enumerate(_cues(segments), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(segments: Sequence[Segment]) -> str:
    # "-->" may not appear in cue text; WebVTT has no escape for it.
    blocks = [
        f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n{text.replace('-->', '->')}\n"
        for start, end, text in _cues(segments)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_txt(segments: Sequence[Segment]) -> str:
    return "\n".join(text for _, _, text in _cues(segments)) + "\n"


def to_json(record: Mapping[str, Any]) -> str:
    """The transcript document (``schemas.Transcript``): the stored record without its owner."""
    created = record["created_at"]
    document = Transcript.model_validate(
        {**record, "created_at": from_epoch(created) if isinstance(created, int | float) else created})
    return document.model_dump_json()


#: format name -> (content type, renderer of the whole record)
FORMATS: dict[str, tuple[str, Callable[[Mapping[str, Any]], str]]] = {
    "json": ("application/json", to_json),
    "txt": ("text/plain; charset=utf-8", lambda record: to_txt(record["segments"])),
    "srt": ("application/x-subrip; charset=utf-8", lambda record: to_srt(record["segments"])),
    "vtt": ("text/vtt; charset=utf-8", lambda record: to_vtt(record["segments"])),
}
