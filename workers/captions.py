"""A video's own captions: which manual track to use, and its WebVTT read into segments.

Only the tracks yt-dlp lists as ``subtitles`` (uploaded by the video's owner) are considered,
never ``automatic_captions`` (YouTube's speech recognition, usually worse than Whisper's).

Which track (``choose_track``), in this order:

1. the requested language, if the request names one;
2. else the language the video's metadata gives (yt-dlp's ``language``);
3. else the video's only track, if it has exactly one;
4. else English.

A language matches a track of the same language in any region or script: ``en`` matches ``en``
first, then ``en-GB``, ``en-US``, ... (in that order); YouTube's old codes (``iw`` for Hebrew,
``in`` for Indonesian, ``ji`` for Yiddish, ``jv`` for Javanese) match Whisper's.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any

from workers.engines import Segment

#: A language tag (``en``, ``en-US``, ``zh-Hans``, ``und``): keeps out yt-dlp's other "subtitles"
#: such as YouTube's ``live_chat`` (a JSON replay of a stream's chat) or ``danmaku``.
_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*$")
#: Whisper's code -> the older ISO 639 code YouTube still uses for some languages.
_OLD_CODES = {"he": "iw", "id": "in", "yi": "ji", "jw": "jv"}
_ENGLISH = "en"

#: ``[hh:]mm:ss.ttt`` (SRT's comma too: a track offered only as SRT reads the same way).
_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})"
_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}")
_TAG = re.compile(r"<[^>]*>")
#: Merged cues closer than this (seconds) count as one stretch of a rolling caption.
_CONTIGUOUS = 0.05


def _primary(tag: str) -> str:
    return re.split(r"[-_]", tag, maxsplit=1)[0].lower()


def _matching(tracks: list[str], language: str) -> str | None:
    """The track of ``language`` (a code such as ``en`` or a tag such as ``en-US``): the exact tag,
    else the first track (in sorted order) of the same primary language."""
    for track in tracks:
        if track.lower().replace("_", "-") == language.lower().replace("_", "-"):
            return track
    primary = _primary(language)
    wanted = {primary, _OLD_CODES.get(primary, primary), *(code for code, old in _OLD_CODES.items() if old == primary)}
    return next((track for track in tracks if _primary(track) in wanted), None)


def caption_tracks(subtitles: Mapping[Any, Any] | None) -> list[str]:
    """The keys of yt-dlp's ``subtitles`` that are captions tracks in some language, sorted."""
    return sorted(key for key, formats in (subtitles or {}).items()
                  if isinstance(key, str) and _LANGUAGE_TAG.match(key) and formats)


def choose_track(subtitles: Mapping[Any, Any] | None, requested: str | None, video_language: str | None) -> str | None:
    """The key of the manual captions track to use (see the module's docstring), or None."""
    tracks = caption_tracks(subtitles)
    if requested:
        return _matching(tracks, requested)
    if video_language and (track := _matching(tracks, video_language)):
        return track
    if len(tracks) == 1:
        return tracks[0]
    return _matching(tracks, _ENGLISH)


def track_language(track: str) -> str:
    """The transcript's ``language`` for a track: its primary language, in Whisper's code (``iw`` -> ``he``)."""
    primary = _primary(track)
    return next((code for code, old in _OLD_CODES.items() if old == primary), primary)


def _seconds(hours: str | None, minutes: str, seconds: str, fraction: str) -> float:
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(fraction.ljust(3, "0")) / 1000


def _cue_lines(payload: list[str]) -> list[str]:
    """The cue's text lines without tags (``<b>``, ``<c.colour>``, ``<v Name>``, karaoke timestamps)
    or entities, whitespace collapsed, empty lines dropped."""
    lines = []
    for line in payload:
        text = " ".join(html.unescape(_TAG.sub("", line)).split())
        if text:
            lines.append(text)
    return lines


def parse_vtt(text: str) -> list[Segment]:
    """The cues of a WebVTT (or SRT) document as segments, in order.

    Cue settings (``align:start position:0%``), identifiers, ``NOTE``/``STYLE``/``REGION`` blocks
    and tags are dropped. Rolling captions, where each cue repeats the line(s) of the one before
    and adds one (YouTube's), become one segment per new line: the repeated lines are removed,
    and a cue that only repeats the previous one extends it.
    """
    segments: list[Segment] = []
    previous: list[str] = []  # the full lines of the last cue read, to find what the next one repeats
    blocks = re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff"))
    for block in blocks:
        lines = block.split("\n")
        timing = next((index for index, line in enumerate(lines) if "-->" in line), None)
        if timing is None:
            continue  # the header, a NOTE, STYLE or REGION block
        match = _TIMING.match(lines[timing])
        if match is None:
            continue
        start = _seconds(*match.groups()[:4])
        end = max(start, _seconds(*match.groups()[4:]))
        lines_now = _cue_lines(lines[timing + 1:])
        if not lines_now:
            continue
        new = lines_now[_repeated(previous, lines_now):] if segments and start <= segments[-1].end + _CONTIGUOUS \
            else lines_now
        previous = lines_now
        if not new:  # only what the last segment says, shown a little longer
            last = segments[-1]
            segments[-1] = Segment(start=last.start, end=max(last.end, round(end, 3)), text=last.text)
            continue
        segments.append(Segment(start=round(start, 3), end=round(end, 3), text=" ".join(new)))
    return segments


def _repeated(before: list[str], now: list[str]) -> int:
    """How many of ``now``'s first lines repeat ``before``'s last ones (the longest such overlap)."""
    for size in range(min(len(before), len(now)), 0, -1):
        if before[-size:] == now[:size]:
            return size
    return 0
