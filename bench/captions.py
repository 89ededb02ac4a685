"""Time saved by captions-first: ``python -m bench.captions [--runs 5] [--long-seconds 150]``.

One ``ytcaption worker`` (its engine host holding the bundled model), the API under gunicorn and a
loopback media server with pages whose ``<video>`` has a WebVTT ``<track>`` (what yt-dlp's generic
extractor lists as the video's captions): the 24 s lecture with its text, and a long clip of the
speech fixtures one after another, with captions written for it. Each page is submitted with
``source=whisper`` and with ``source=captions``, alternately, ``--runs`` times each (after one
warm-up job of each, not counted). A job's time is its ``ended_at - created_at`` (queue, download,
transcription or captions, storing): the poll interval does not blur it. Printed: median and range
per page and source, the saving, and the medians of the jobs' own timings.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

from bench.e2e import _seconds_between
from bench.engine import SPEECH, make_long_clip
from bench.harness import FIXTURES, BenchError, Harness, http_json
from bench.report import Figure, Report

API = "/api/v1/transcribe/async"
SECTION = "captions vs whisper"
SOURCES = ("whisper", "captions")


def captions_for(seconds: float, cue_seconds: float = 3.0) -> str:
    """WebVTT covering ``seconds``, a cue every ``cue_seconds`` (what they say does not change the time)."""
    cues, start, index = ["WEBVTT", ""], 0.0, 0
    while start < seconds:
        end = min(seconds, start + cue_seconds)
        cues += [f"{_vtt_time(start)} --> {_vtt_time(end)}", f"Line {index + 1} of what is said.", ""]
        start, index = end, index + 1
    return "\n".join(cues)


def _vtt_time(seconds: float) -> str:
    millis = round(seconds * 1000)
    return f"{millis // 3_600_000:02d}:{millis // 60_000 % 60:02d}:{millis // 1000 % 60:02d}.{millis % 1000:03d}"


def captioned_page(directory: Path, media: str, seconds: float) -> str:
    """Write ``<media>.html`` (a <video> of ``media`` with a captions track) and its track; return the page's name."""
    stem = Path(media).stem
    (directory / f"{stem}.vtt").write_text(captions_for(seconds))
    (directory / f"{stem}.html").write_text(
        f"<html><head><title>{stem}</title></head><body><video controls src=\"{media}\">"
        f"<track kind=\"captions\" srclang=\"en\" src=\"{stem}.vtt\"></video></body></html>")
    return f"{stem}.html"


def run(runs: int, long_seconds: int, keep: bool = False) -> Report:
    report = Report(mode=f"{runs} runs", machine={})
    with Harness(keep=keep) as h:
        h.start_redis()
        media = h.dir / "media"
        media.mkdir()
        for name in SPEECH:
            shutil.copy(FIXTURES / name, media / name)
        long_clip = make_long_clip(media, long_seconds)
        pages = {"lecture.webm (24 s)": captioned_page(media, "lecture.webm", 24.0),
                 f"{long_clip.name} ({long_seconds} s)": captioned_page(media, long_clip.name, long_seconds)}
        server = h.serve_media(media)
        api, key = h.api(), h.api_key()
        [worker] = h.start_workers("worker", 1, ["express"], queue="express")

        def job(page: str, source: str) -> dict:
            code, body = http_json("POST", f"{api}{API}/submit", key, {"youtube_url": server.url(page),
                                                                         "source": source})
            if code != 202:
                raise BenchError(f"submit answered {code}: {body}")
            status_url = api + body["status_url"]
            status = h.wait_until(lambda: _ended(http_json("GET", status_url, key)[1]), f"{page} ({source})",
                                  timeout=900, watch=[worker], interval=0.1)
            if status["status"] != "completed" or status["result"]["source"] != source:
                raise BenchError(f"{page} with source={source} did not complete as asked: {status}")
            return status

        h.say("warm-up: one job of each source, not counted")
        for source in SOURCES:
            job(pages["lecture.webm (24 s)"], source)
        for label, page in pages.items():
            seconds = {source: [] for source in SOURCES}
            timings = {source: [] for source in SOURCES}
            for number in range(runs):
                for source in SOURCES:
                    status = job(page, source)
                    seconds[source].append(_seconds_between(status["created_at"], status["ended_at"]))
                    timings[source].append(status["result"]["timings"])
                h.say(f"{label} run {number + 1}: " + ", ".join(f"{s} {seconds[s][-1]:.2f} s" for s in SOURCES))
            for source in SOURCES:
                report.add(Figure(SECTION, f"{label} source={source}, job time", seconds[source], unit="s"))
                report.note(SECTION, f"{label} source={source} timings (median s): " + ", ".join(
                    f"{stage} {statistics.median(t[stage] for t in timings[source]):.3f}"
                    for stage in timings[source][0]))
            report.add(Figure(SECTION, f"{label} whisper / captions", [
                w / c for w, c in zip(seconds["whisper"], seconds["captions"])], unit="×", digits=1))
    report.note(SECTION, "job time = ended_at - created_at; one `ytcaption worker express` (forking, engine host "
                         "with tiny.en), API under gunicorn, loopback media server, yt-dlp generic extractor")
    return report


def _ended(status: dict) -> dict | None:
    return status if status.get("status") in ("completed", "failed", "cancelled") else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.captions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed jobs per page and source")
    parser.add_argument("--long-seconds", type=int, default=150, help="length of the long clip")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs of every process)")
    args = parser.parse_args(argv)
    report = run(args.runs, args.long_seconds, keep=args.keep)
    print(report.printed())
    return 0


if __name__ == "__main__":
    sys.exit(main())
