"""Section 8: a long recording with 1 worker and with 2, which share it in pieces (``workers.pieces``).

The recording is the speech fixtures one after another with half a second between them
(``bench.engine.make_long_clip``): 20 minutes in the full run, 4 with ``--quick`` (then with
``CHUNK_THRESHOLD_SECONDS=120`` and ``CHUNK_SECONDS=60``, so that it is still cut). Each worker
has ``WHISPER_CPU_THREADS=1`` (2 workers on 2 cores); one worker alone gets no help, so it
transcribes the recording whole, as it would in production. Job time = ``ended_at -
created_at`` from the status document; WER against the text the recording was made from.
"""

from __future__ import annotations

from bench.e2e import transcribe_via_api
from bench.engine import Clip
from bench.harness import Harness
from bench.report import Figure, Report

SECTION = "8 long recording in pieces"


def run(h: Harness, report: Report, clip: Clip, runs: int, quick: bool) -> None:
    from bench.tuning import reference_text
    from tests.helpers import word_error_rate

    overrides = {"WHISPER_CPU_THREADS": "1"}
    if quick:
        overrides |= {"CHUNK_THRESHOLD_SECONDS": "120", "CHUNK_SECONDS": "60"}
    seconds: dict[int, list[float]] = {}
    for workers in (1, 2):
        h.stop_matching("worker")
        h.empty_queues("express")
        h.start_workers("pieces-worker", workers, ["express"], queue="express", env=h.env(**overrides))
        seconds[workers], wer, pieces = [], None, 0
        for _ in range(runs):
            total, result = transcribe_via_api(h, clip, timeout=3600)
            seconds[workers].append(total)
            pieces = result["pieces"]
        transcript = _transcript_text(h, result["transcription_id"])
        wer = word_error_rate(reference_text(result["duration"]), transcript)
        label = f"{workers} worker{'s' if workers > 1 else ''}"
        report.add(Figure(SECTION, f"{clip.name}, {label}: job time", seconds[workers], unit="s",
                          note=f"{pieces} piece(s)"))
        report.add(Figure(SECTION, f"{clip.name}, {label}: WER", [wer], digits=3))
        report.note(SECTION, f"{label}: {pieces} piece(s), WER {wer:.3f}")
        h.stop_matching("pieces-worker")
    report.add(Figure(SECTION, f"{clip.name}: 1 worker / 2 workers (speed-up)",
                      [one / two for one, two in zip(seconds[1], seconds[2])], unit="×", target=(">=", 1.5)))
    report.note(SECTION, f"each worker WHISPER_CPU_THREADS=1; {overrides}")


def _transcript_text(h: Harness, transcription_id: str) -> str:
    from bench.harness import http_json

    code, body = http_json("GET", f"{h.api()}/api/v1/transcriptions/{transcription_id}", h.api_key())
    return body["text"] if code == 200 else ""
