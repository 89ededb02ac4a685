"""Section 7: accuracy on a generated corpus, the default decoding and the previous one side by side.

Each clip of ``bench.corpus`` (voices and speeds, noise, a long-form reading, silences, a
repeatability clip) goes through ``FasterWhisperEngine.transcribe``, the code the engine host runs,
once with the settings as they are and once with the decoding the server had before (no
voice-activity filter, each window conditioned on the previous text, temperature fallback). Each
configuration has its own engine, its model loaded once; both take each clip in turn, so a busy
machine slows both alike.

``python -m bench.accuracy [--quick]`` runs this section alone and prints its table and the
per-clip table (the notes of ``python -m bench``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.core.settings import Settings
from bench import corpus
from bench.corpus import Clip
from bench.harness import FIXTURES
from bench.report import Figure, Report

SECTION = "7 accuracy"
#: The decoding before voice-activity filtering became the default. A setting the checkout does not
#: have is left out (an older checkout: its old behaviour is then the only one it has).
PREVIOUS = {"WHISPER_VAD_FILTER": "false", "WHISPER_CONDITION_ON_PREVIOUS_TEXT": "true",
            "WHISPER_TEMPERATURE_FALLBACK": "true"}
#: A window of this many seconds with at least ``WINDOW_SPEECH`` s of speech must have a segment in it.
WINDOW = 30.0
WINDOW_SPEECH = 5.0
#: Silent parts of the silence–speech–silence clip at least this long count for hallucinated words
#: (not the pauses between sentences, where a segment's imprecise times may fall).
MIN_SILENCE = 2.0


@dataclass(frozen=True)
class Profile:
    plan: corpus.Plan
    #: Transcriptions of the repeatability clip, per configuration.
    repeat_runs: int


QUICK = Profile(corpus.QUICK, repeat_runs=3)
FULL = Profile(corpus.FULL, repeat_runs=10)
PROFILES = {"quick": QUICK, "full": FULL}


@dataclass(frozen=True)
class Run:
    """One transcription: its segments, its engine seconds, and the speech its VAD found (None: VAD off)."""

    segments: tuple  # workers.engines.Segment
    seconds: float
    speech_seconds: float | None

    @property
    def text(self) -> str:
        return " ".join(segment.text for segment in self.segments)

    @property
    def wordless(self) -> bool:
        """No segment, or only segments without a word (the previous decoding gave ". . ." for speech)."""
        return not worded(self.segments)


@dataclass
class Score:
    """A clip's transcriptions with one configuration, and what they are worth."""

    clip: Clip
    runs: list[Run] = field(default_factory=list)

    @property
    def wer(self) -> float | None:
        """Median word error rate over the runs; None for a clip without speech."""
        from tests.helpers import word_error_rate

        if not self.clip.reference:
            return None
        return statistics.median(word_error_rate(self.clip.reference, run.text) for run in self.runs)

    @property
    def empty(self) -> int | None:
        """1 when the clip has speech and its (first) transcript has no word; None without speech."""
        return int(self.runs[0].wordless) if self.clip.speech else None

    @property
    def windows(self) -> tuple[int, int]:
        return missing_windows(self.clip, self.runs[0].segments)

    @property
    def hallucinated(self) -> int | None:
        return hallucinated_words(self.clip, self.runs[0].segments)

    @property
    def differing(self) -> int:
        """Runs whose text differs from the first run's."""
        return sum(run.text != self.runs[0].text for run in self.runs[1:])

    @property
    def empty_runs(self) -> int:
        return sum(run.wordless for run in self.runs)

    @property
    def rtf(self) -> float:
        return sum(run.seconds for run in self.runs) / (self.clip.duration * len(self.runs))


def configurations() -> list[tuple[str, dict[str, str]]]:
    """(label, overrides): the settings as they are, and the previous decoding as far as settings name it."""
    previous = {key: value for key, value in PREVIOUS.items() if key.lower() in Settings.model_fields}
    return [("defaults", {}), ("previous decoding", previous)]


def needed_windows(clip: Clip) -> list[tuple[float, float]]:
    """The ``WINDOW`` s windows of ``clip`` with at least ``WINDOW_SPEECH`` s of speech in them."""
    windows, start = [], 0.0
    while start < clip.duration:
        end = min(start + WINDOW, clip.duration)
        if sum(_overlap((start, end), span) for span in clip.speech) >= WINDOW_SPEECH:
            windows.append((start, end))
        start = end
    return windows


def missing_windows(clip: Clip, segments) -> tuple[int, int]:
    """(windows no segment with a word overlaps, windows that need one): speech the transcript skipped."""
    needed, segments = needed_windows(clip), worded(segments)
    missing = sum(not any(_overlap(window, (s.start, s.end)) > 0 for s in segments) for window in needed)
    return missing, len(needed)


def worded(segments) -> list:
    """The segments with at least one word: a segment of punctuation alone transcribes nothing."""
    from tests.helpers import words

    return [segment for segment in segments if words(segment.text)]


def hallucinated_words(clip: Clip, segments) -> int | None:
    """Words transcribed where nothing was said: all of a silence clip's, and those of segments lying
    entirely in the long silences of the silence–speech–silence clip. None for other clips."""
    from tests.helpers import words

    if clip.group == "silence":
        invented = segments
    elif clip.group == "silence-speech-silence":
        silences = [part for part in clip.silent_parts() if part[1] - part[0] >= MIN_SILENCE]
        invented = [s for s in segments if any(start <= s.start and s.end <= end for start, end in silences)]
    else:
        return None
    return sum(len(words(segment.text)) for segment in invented)


def transcribe(clips: list[Clip], repeat_runs: int, say: Callable[[str], None]) -> dict[str, list[Score]]:
    """Every clip with every configuration (the repeatability clip ``repeat_runs`` times): scores by configuration."""
    from workers.engines import FasterWhisperEngine

    engines = {}
    for label, overrides in configurations():
        engine = FasterWhisperEngine(Settings.load(overrides))
        engine.load(engine.settings.default_model_name)
        engine.transcribe(str(FIXTURES / "fox.m4a"), language="en", model=engine.settings.default_model_name)  # warm-up
        engines[label] = engine
    scores: dict[str, list[Score]] = {label: [] for label in engines}
    for clip in clips:
        say(f"accuracy: {clip.name} ({clip.duration:.0f} s)")
        for label in engines:
            scores[label].append(Score(clip))
        for _ in range(repeat_runs if clip.group == "repeatability" else 1):
            for label, engine in engines.items():  # in turn: machine load falls on both
                started = time.perf_counter()
                transcript = engine.transcribe(str(clip.path), language="en", model=engine.settings.default_model_name)
                scores[label][-1].runs.append(Run(tuple(transcript.segments), time.perf_counter() - started,
                                                  transcript.speech_seconds))
    return scores


def run(report: Report, directory: Path, profile: Profile, say: Callable[[str], None]) -> dict[str, list[Score]]:
    """Make the corpus in ``directory``, transcribe it with both configurations, add the figures and notes."""
    started = time.monotonic()
    clips = corpus.make(directory, profile.plan)
    say(f"accuracy: corpus of {len(clips)} clips, {sum(c.duration for c in clips):.0f} s, made in "
        f"{time.monotonic() - started:.1f} s")
    scores = transcribe(clips, profile.repeat_runs, say)
    for label, overrides in configurations():
        described = ", ".join(f"{key}={value}" for key, value in overrides.items()) or "Settings.load() as it is"
        report.note(SECTION, f"{label}: {described}")
    add_figures(report, scores)
    for line in clip_table(scores):
        report.note(SECTION, line)
    path = directory / "transcripts.json"
    path.write_text(json.dumps({label: {score.clip.name: [[[s.start, s.end, s.text] for s in run.segments]
                                                          for run in score.runs] for score in group}
                                for label, group in scores.items()}, indent=1) + "\n")
    report.note(SECTION, f"WER: word error rate against the text espeak-ng spoke (lower is better); runs = clips "
                         f"(or transcriptions) a figure is the median of; segments in {path.name}")
    return scores


def add_figures(report: Report, scores: dict[str, list[Score]]) -> None:
    """Figures by group of clips, the configurations one after the other in each."""
    labels = list(scores)
    first = scores[labels[0]]
    groups = list(dict.fromkeys(s.clip.group for s in first if s.clip.reference))
    for group in groups:
        for label in labels:
            in_group = [s for s in scores[label] if s.clip.group == group]
            values = [s.wer for s in in_group] if group != "repeatability" else _run_wers(in_group[0])
            report.add(Figure(SECTION, f"{label}: WER, {group} ({_count(in_group)})", values, digits=3))
    with_speech = [s for s in first if s.clip.speech]
    needed = sum(s.windows[1] for s in with_speech)
    repeats = [s for s in first if s.clip.group == "repeatability"]
    counted = (
        ("clips with speech whose transcript has no word", f"of {len(with_speech)}",
         lambda ss: sum(s.empty for s in ss if s.clip.speech)),
        ("30 s windows with speech and no segment", f"of {needed}",
         lambda ss: sum(s.windows[0] for s in ss if s.clip.speech)),
        ("words hallucinated on silence", "silence clips, silences around speech",
         lambda ss: sum(s.hallucinated or 0 for s in ss)),
        ("repeatability: runs whose text differs from the first", f"of {sum(len(s.runs) - 1 for s in repeats)}",
         lambda ss: sum(s.differing for s in ss if s.clip.group == "repeatability")),
        ("repeatability: runs with no word", f"of {sum(len(s.runs) for s in repeats)}",
         lambda ss: sum(s.empty_runs for s in ss if s.clip.group == "repeatability")),
    )
    for name, of, count in counted:
        for label in labels:
            report.add(Figure(SECTION, f"{label}: {name} ({of})", [count(scores[label])], digits=0))
    for label in labels:
        found = [(s.runs[0].speech_seconds, s.clip.speech_seconds) for s in scores[label] if s.clip.speech]
        if all(seconds is not None for seconds, _ in found):
            report.add(Figure(SECTION, f"{label}: speech the VAD found ÷ speech there is (clips with speech)",
                              [seconds / reference for seconds, reference in found], unit="×", digits=2))
        silence = [s.runs[0].speech_seconds for s in scores[label] if s.clip.group == "silence"]
        if all(seconds is not None for seconds in silence):
            report.add(Figure(SECTION, f"{label}: speech the VAD found in the silence clips, s", [sum(silence)],
                              digits=1))
    for label in labels:
        runs = [(run.seconds, s.clip.duration) for s in scores[label] for run in s.runs]
        report.add(Figure(SECTION, f"{label}: engine seconds ÷ audio seconds, whole corpus",
                          [sum(seconds for seconds, _ in runs) / sum(audio for _, audio in runs)], unit="×", digits=3,
                          note="timing: noisy on a shared machine, unlike WER"))


def clip_table(scores: dict[str, list[Score]]) -> list[str]:
    """One line per clip, each cell the configurations' figures side by side ("defaults / previous")."""
    labels = list(scores)
    header = ("clip", "audio s", "speech s", "WER", "no word", "missing windows", "hallucinated words",
              "VAD speech s", "RTF")
    rows = [header]
    for index, clip in enumerate(score.clip for score in scores[labels[0]]):
        per_label = [scores[label][index] for label in labels]
        rows.append((
            clip.name, f"{clip.duration:.1f}", f"{clip.speech_seconds:.1f}",
            _pair(s.wer for s in per_label) if clip.reference else "",
            _pair(s.empty for s in per_label) if clip.speech else "",
            " / ".join(f"{s.windows[0]}/{s.windows[1]}" for s in per_label) if clip.speech else "",
            _pair(s.hallucinated for s in per_label),
            _pair((s.runs[0].speech_seconds for s in per_label), digits=1),
            _pair((s.rtf for s in per_label), digits=3),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [f"per clip, {' / '.join(labels)}:"]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    for repeat in zip(*(scores[label] for label in labels)):
        if repeat[0].clip.group == "repeatability":
            lines.append(f"{repeat[0].clip.name}, {len(repeat[0].runs)} runs: text differing from the first run "
                         f"{_pair(s.differing for s in repeat)}, with no word {_pair(s.empty_runs for s in repeat)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the small corpus of the quick bench")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (clips, transcripts.json)")
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    report = Report(mode="quick" if args.quick else "full", machine={})
    directory = Path(tempfile.mkdtemp(prefix="ytcaption-accuracy-"))
    started, load = time.monotonic(), os.getloadavg()[0]
    try:
        run(report, directory, profile, lambda text: print(f"[{time.monotonic() - started:6.1f} s] {text}",
                                                           file=sys.stderr, flush=True))
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
    print(report.table() + "\n")
    print("\n".join(report.notes[SECTION]))
    print(f"\n{time.monotonic() - started:.0f} s; load average (1 min) {load:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end on {os.cpu_count()} cores" + (f"; kept {directory}" if args.keep else ""))
    return 0


def _run_wers(score: Score) -> list[float]:
    from tests.helpers import word_error_rate

    return [word_error_rate(score.clip.reference, run.text) for run in score.runs]


def _count(scores: list[Score]) -> str:
    if len(scores) == 1 and len(scores[0].runs) > 1:
        return f"{len(scores[0].runs)} runs"
    return f"{len(scores)} clip" + ("s" if len(scores) > 1 else "")


def _pair(values, digits: int = 3) -> str:
    """``values`` joined with " / ", each as a number, or "–" when it is None."""
    def text(value) -> str:
        if value is None:
            return "–"
        return str(value) if isinstance(value, int) else f"{value:.{digits}f}"

    return " / ".join(text(value) for value in values)


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


if __name__ == "__main__":
    sys.exit(main())
