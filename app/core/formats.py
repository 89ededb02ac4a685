"""Render a stored transcript as json, txt, srt or vtt.

Pure functions over the transcript record (see ``app.core.transcripts``), so the API renders
formats without importing anything from the worker's ML stack.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from app.core.schemas import Transcript, from_epoch
from app.core.transcripts import chapter_of_each

Segment = Mapping[str, Any]
Chapter = Mapping[str, Any]


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


def _sections(segments: Sequence[Segment], chapters: Sequence[Chapter]) -> list[tuple[Chapter | None, list]]:
    """The cues in chapters: those before the first chapter (if any), then each chapter with its
    cues (a cue is in the chapter it starts in: ``chapter_of_each``, as in the stored transcript)."""
    ordered = sorted(chapters, key=lambda chapter: float(chapter["start"]))
    cues = _cues(segments)
    sections: list[tuple[Chapter | None, list]] = [(None, []), *((chapter, []) for chapter in ordered)]
    for cue, owner in zip(cues, chapter_of_each([float(chapter["start"]) for chapter in ordered],
                                                (cue[0] for cue in cues))):
        sections[owner + 1][1].append(cue)
    return sections if sections[0][1] else sections[1:]


def _chapter_title(chapter: Chapter) -> str:
    return " ".join(str(chapter["title"]).split())


def to_srt(segments: Sequence[Segment]) -> str:
    blocks = [
        f"{index}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n{text}\n"
        for index, (start, end, text) in enumerate(_cues(segments), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(segments: Sequence[Segment], chapters: Sequence[Chapter] = ()) -> str:
    """WebVTT; each chapter's start is a ``NOTE`` block before its first cue.

    A comment, not a cue: players skip comments, while a cue would show the chapter's title as a
    caption (chapters proper are a separate ``kind="chapters"`` track, which one file cannot be).
    """
    blocks = []
    for chapter, cues in _sections(segments, chapters):
        if chapter is not None:
            # A comment may not contain "-->" either.
            title = _chapter_title(chapter).replace("-->", "->")
            blocks.append(f"NOTE Chapter: {title} ({_timestamp(float(chapter['start']), '.')})\n")
        # "-->" may not appear in cue text; WebVTT has no escape for it.
        blocks += [f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n{text.replace('-->', '->')}\n"
                   for start, end, text in cues]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_txt(segments: Sequence[Segment], chapters: Sequence[Chapter] = ()) -> str:
    """One segment a line; with chapters, a paragraph each, under a heading ``# Title (HH:MM:SS)``."""
    if not chapters:
        return "\n".join(text for _, _, text in _cues(segments)) + "\n"
    paragraphs = []
    for chapter, cues in _sections(segments, chapters):
        heading = [f"# {_chapter_title(chapter)} ({_timestamp(float(chapter['start']), '.')[:8]})"] if chapter else []
        paragraphs.append("\n".join([*heading, *(text for _, _, text in cues)]))
    return "\n\n".join(paragraphs) + "\n"


def to_json(record: Mapping[str, Any]) -> str:
    """The transcript document (``schemas.Transcript``): the stored record without its owner."""
    created = record["created_at"]
    document = Transcript.model_validate(
        {**record, "created_at": from_epoch(created) if isinstance(created, int | float) else created})
    return document.model_dump_json(exclude={"segments": {"__all__": set() if _has_words(record) else {"words"}}})


def _has_words(record: Mapping[str, Any]) -> bool:
    """Whether the transcript kept word timestamps (asked for with ``word_timestamps``)."""
    return any("words" in segment for segment in record["segments"])


#: format name -> (content type, renderer of the whole record)
FORMATS: dict[str, tuple[str, Callable[[Mapping[str, Any]], str]]] = {
    "json": ("application/json", to_json),
    "txt": ("text/plain; charset=utf-8", lambda record: to_txt(record["segments"], record.get("chapters") or ())),
    "srt": ("application/x-subrip; charset=utf-8", lambda record: to_srt(record["segments"])),
    "vtt": ("text/vtt; charset=utf-8", lambda record: to_vtt(record["segments"], record.get("chapters") or ())),
}
