"""The accuracy corpus: speech clips made at bench time, each with exactly what it says and when.

espeak-ng speaks the texts of ``bench.prose`` sentence by sentence; the sentences are laid end to
end with set pauses, so the reference text and the timeline (where speech is) are known exactly,
not guessed from the audio. sox resamples to 16 kHz and makes the noise. Everything is
deterministic, so two runs transcribe the same samples: fixed texts, voices and pauses, and sox's
repeatable mode (``-R``, a fixed seed) for the noise and for the dither of its resampling (without
it, a clean clip's WER moved between runs). Nothing here is committed audio: the clips go into
the directory the caller gives (the bench's temp dir).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench import prose

SAMPLE_RATE = 16000
#: Active speech level (RMS over the speech only), in dBFS: loud enough to be clear, with room for noise.
SPEECH_DBFS = -23.0
#: Pause between two sentences of a paragraph (espeak-ng's own pause at a full stop is about as long).
SENTENCE_PAUSE = 0.35
#: Pauses between paragraphs of the long-form clip, in turn: a few seconds, not all the same.
PARAGRAPH_PAUSES = (2.0, 3.5, 5.0)
#: Below this (about -60 dBFS) espeak-ng's output is its own silence, trimmed off each sentence.
TRIM_LEVEL = 1e-3


@dataclass(frozen=True)
class Clip:
    """A WAV file and what it holds: the words said, and the spans (seconds) where they are said."""

    name: str
    #: What the clip tests: voices, noise 5 dB (and each SNR), long-form, silence, silence-speech-silence,
    #: repeatability. Figures are by group.
    group: str
    label: str
    path: Path
    duration: float
    reference: str = ""
    speech: tuple[tuple[float, float], ...] = ()

    @property
    def speech_seconds(self) -> float:
        return sum(end - start for start, end in self.speech)

    def silent_parts(self) -> list[tuple[float, float]]:
        """The spans between (and around) the speech."""
        parts, previous = [], 0.0
        for start, end in self.speech:
            if start > previous:
                parts.append((previous, start))
            previous = end
        if previous < self.duration:
            parts.append((previous, self.duration))
        return parts


@dataclass(frozen=True)
class Plan:
    """Which clips to make: the quick plan is a small subset of the full one."""

    voices: tuple[str, ...]
    speeds: tuple[int, ...]
    noise_voices: tuple[str, ...]
    snrs: tuple[float, ...]  # dB, speech RMS over noise RMS
    #: How many of ``prose.PASSAGE``'s sentences the voice, noise and silence–speech–silence clips say.
    passage_sentences: int
    long_form: bool
    silence_seconds: float
    #: Silence before and after the speech of the silence–speech–silence clip.
    padding_seconds: float
    #: How many sentences of ``prose.LONG_FORM`` (from its start) the repeatability clip says, and its noise.
    repeat_sentences: int
    repeat_snr: float
    #: Normal speaking rate, for the clips whose condition is not the speed.
    speed: int = 175
    #: Below this level (dBFS) the "noise floor" silence and the silence around speech lie.
    floor_dbfs: float = -60.0
    long_form_voice: str = "en-us"
    #: A calm reading pace for the long-form clip (espeak-ng's 175 speaks about 210 words a minute).
    long_form_speed: int = 160
    repeat_voice: str = "en-us+f3"
    passage: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "passage", " ".join(prose.sentences(prose.PASSAGE)[: self.passage_sentences]))


QUICK = Plan(voices=("en-us", "en-gb"), speeds=(175,), noise_voices=("en-us",), snrs=(5.0,), passage_sentences=3,
             long_form=False, silence_seconds=15.0, padding_seconds=10.0, repeat_sentences=2, repeat_snr=10.0)
FULL = Plan(voices=("en-us", "en-gb", "en-us+f3", "en-gb-scotland"), speeds=(130, 175, 220),
            noise_voices=("en-us", "en-gb"), snrs=(20.0, 5.0), passage_sentences=6, long_form=True,
            silence_seconds=180.0, padding_seconds=60.0, repeat_sentences=18, repeat_snr=10.0)


def make(directory: Path, plan: Plan) -> list[Clip]:
    """Every clip of ``plan``, as 16 kHz mono WAV files in ``directory``."""
    check_voices({*plan.voices, *plan.noise_voices, plan.long_form_voice, plan.repeat_voice})
    directory.mkdir(parents=True, exist_ok=True)
    clips = []
    for voice in plan.voices:
        for speed in plan.speeds:
            audio, speech = speak([prose.sentences(plan.passage)], voice, speed)
            clips.append(_save(directory, f"voice-{_slug(voice)}-{speed}", "voices", f"{voice}, {speed} wpm",
                               audio, plan.passage, speech))
    for voice in plan.noise_voices:
        for snr in plan.snrs:
            audio, speech = speak([prose.sentences(plan.passage)], voice, plan.speed)
            mixed = audio + pink_noise(len(audio), _rms(audio, speech) / 10 ** (snr / 20), directory)
            clips.append(_save(directory, f"noise-{_slug(voice)}-{snr:g}db", f"noise {snr:g} dB",
                               f"{voice}, {plan.speed} wpm, pink noise at {snr:g} dB SNR", mixed, plan.passage,
                               speech))
    if plan.long_form:
        clips.append(_long_form(directory, plan))
    silence = int(plan.silence_seconds * SAMPLE_RATE)
    floor = 10 ** (plan.floor_dbfs / 20)
    clips.append(_save(directory, "silence-zeros", "silence", f"digital silence, {plan.silence_seconds:g} s",
                       np.zeros(silence, dtype=np.float32)))
    clips.append(_save(directory, "silence-floor", "silence",
                       f"pink noise floor at {plan.floor_dbfs:g} dBFS, {plan.silence_seconds:g} s",
                       pink_noise(silence, floor, directory)))
    clips.append(_silence_speech_silence(directory, plan))
    clips.append(_repeatability(directory, plan))
    return clips


def speak(paragraphs: list[list[str]], voice: str, speed: int) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """``paragraphs`` (lists of sentences) spoken one sentence at a time, with pauses, and where each is.

    The audio (16 kHz float32) is scaled to ``SPEECH_DBFS`` over its speech. No pause follows the
    last sentence.
    """
    sentences = [sentence for paragraph in paragraphs for sentence in paragraph]
    with tempfile.TemporaryDirectory(prefix="espeak-") as work, ThreadPoolExecutor(os.cpu_count()) as pool:
        work_dir = Path(work)
        # One espeak-ng process per sentence, as many at once as there are cores: most of its time is start-up.
        spoken = list(pool.map(lambda i: _espeak(sentences[i], voice, speed, work_dir / f"{i}.wav"),
                               range(len(sentences))))
        rate = spoken[0][0]
        pieces: list[np.ndarray] = []
        spans: list[tuple[int, int]] = []  # samples at espeak-ng's rate
        length, index = 0, 0
        for p, paragraph in enumerate(paragraphs):
            for s in range(len(paragraph)):
                samples = spoken[index][1]
                index += 1
                spans.append((length, length + len(samples)))
                if s < len(paragraph) - 1:
                    pause = SENTENCE_PAUSE
                elif p < len(paragraphs) - 1:
                    pause = PARAGRAPH_PAUSES[p % len(PARAGRAPH_PAUSES)]
                else:
                    pause = 0.0
                pieces += [samples, np.zeros(round(pause * rate), dtype=np.float32)]
                length += len(samples) + len(pieces[-1])
        # Half the level first: espeak-ng peaks near full scale, and resampling overshoots its peaks.
        audio = resample(np.concatenate(pieces) / 2, rate, work_dir)
    speech = [(start / rate, min(end / rate, len(audio) / SAMPLE_RATE)) for start, end in spans]
    return audio * (10 ** (SPEECH_DBFS / 20) / _rms(audio, speech)), speech


def check_voices(voices: set[str]) -> None:
    """Fail if espeak-ng lacks a voice or variant: it would speak its default voice without a word."""
    listing = subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True, check=True).stdout
    languages = {line.split()[1] for line in listing.splitlines()[1:] if len(line.split()) > 1}
    variants = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True).stdout
    variant_names = {line.split()[-1].removeprefix("!v/").lower() for line in variants.splitlines()[1:] if line}
    for voice in sorted(voices):
        language, _, variant = voice.partition("+")
        if language not in languages or (variant and variant.lower() not in variant_names):
            raise RuntimeError(f"espeak-ng has no voice {voice!r} (see `espeak-ng --voices`)")


def resample(audio: np.ndarray, rate: int, work_dir: Path) -> np.ndarray:
    """``audio`` at ``rate`` Hz, resampled to 16 kHz by sox (its band-limited ``rate`` effect)."""
    source, target = work_dir / "in.wav", work_dir / "out.wav"
    write_wav(source, audio, rate)
    subprocess.run(["sox", "-R", str(source), "-r", str(SAMPLE_RATE), str(target)], check=True)  # -R: fixed dither
    return read_wav(target)[1]


def read_wav(path: Path) -> tuple[int, np.ndarray]:
    """A mono 16-bit WAV file's rate and samples (float32, −1 to 1)."""
    with wave.open(str(path), "rb") as source:
        frames = source.readframes(source.getnframes())
        return source.getframerate(), np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768


def write_wav(path: Path, audio: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(audio, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes())


def pink_noise(length: int, rms: float, work_dir: Path) -> np.ndarray:
    """``length`` samples of sox's pink noise at ``rms``: the same samples for the same length, every run."""
    path = work_dir / "pinknoise.wav"
    subprocess.run(["sox", "-R", "-n", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(path),
                    "synth", f"{length / SAMPLE_RATE:.6f}", "pinknoise"], check=True)
    noise = read_wav(path)[1][:length]
    path.unlink()
    return noise * (rms / float(np.sqrt(np.mean(noise**2))))


def _espeak(text: str, voice: str, speed: int, path: Path) -> tuple[int, np.ndarray]:
    """One sentence spoken by espeak-ng, its leading and trailing silence cut off."""
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True)
    rate, samples = read_wav(path)
    loud = np.flatnonzero(np.abs(samples) > TRIM_LEVEL)
    if not len(loud):
        raise RuntimeError(f"espeak-ng said nothing for {text!r} with voice {voice!r}")
    return rate, samples[loud[0]: loud[-1] + 1]


def _long_form(directory: Path, plan: Plan) -> Clip:
    """All of ``prose.LONG_FORM``: paragraphs with pauses of a few seconds between them (over 10 minutes)."""
    paragraphs = [prose.sentences(paragraph) for paragraph in prose.LONG_FORM]
    audio, speech = speak(paragraphs, plan.long_form_voice, plan.long_form_speed)
    minutes = len(audio) / SAMPLE_RATE / 60
    return _save(directory, "long-form", "long-form",
                 f"{plan.long_form_voice}, {plan.long_form_speed} wpm, {minutes:.1f} min, pauses of "
                 f"{min(PARAGRAPH_PAUSES):g}–{max(PARAGRAPH_PAUSES):g} s", audio, " ".join(prose.LONG_FORM), speech)


def opening(sentences: int) -> list[list[str]]:
    """The first ``sentences`` sentences of ``prose.LONG_FORM``, by paragraph."""
    paragraphs = []
    for paragraph in prose.LONG_FORM:
        if sentences <= 0:
            break
        paragraphs.append(prose.sentences(paragraph)[:sentences])
        sentences -= len(paragraphs[-1])
    return paragraphs


def _repeatability(directory: Path, plan: Plan) -> Clip:
    """The start of the long-form text in noise: a clip the decoder is unsure of here and there, where a
    random fallback would show, transcribed again and again."""
    paragraphs = opening(plan.repeat_sentences)
    audio, speech = speak(paragraphs, plan.repeat_voice, plan.speed)
    audio = audio + pink_noise(len(audio), _rms(audio, speech) / 10 ** (plan.repeat_snr / 20), directory)
    return _save(directory, "repeatability", "repeatability",
                 f"{plan.repeat_voice}, {plan.speed} wpm, pink noise at {plan.repeat_snr:g} dB SNR", audio,
                 " ".join(sentence for paragraph in paragraphs for sentence in paragraph), speech)


def _silence_speech_silence(directory: Path, plan: Plan) -> Clip:
    """The passage between two long silences, all over the noise floor (a room, not digital silence)."""
    audio, speech = speak([prose.sentences(plan.passage)], plan.voices[0], plan.speed)
    padding = int(plan.padding_seconds * SAMPLE_RATE)
    mixed = np.concatenate([np.zeros(padding, dtype=np.float32), audio, np.zeros(padding, dtype=np.float32)])
    mixed = mixed + pink_noise(len(mixed), 10 ** (plan.floor_dbfs / 20), directory)
    shifted = [(start + plan.padding_seconds, end + plan.padding_seconds) for start, end in speech]
    return _save(directory, "silence-speech-silence", "silence-speech-silence",
                 f"{plan.padding_seconds:g} s silence, {len(audio) / SAMPLE_RATE:.0f} s speech, "
                 f"{plan.padding_seconds:g} s silence ({plan.floor_dbfs:g} dBFS floor)",
                 mixed, plan.passage, shifted)


def _save(directory: Path, name: str, group: str, label: str, audio: np.ndarray, reference: str = "",
          speech: list[tuple[float, float]] | None = None) -> Clip:
    path = directory / f"{name}.wav"
    write_wav(path, audio)
    return Clip(name, group, label, path, len(audio) / SAMPLE_RATE, reference, tuple(speech or ()))


def _rms(audio: np.ndarray, speech: list[tuple[float, float]]) -> float:
    """RMS over the speech spans only: the level a listener hears, whatever the pauses."""
    parts = [audio[int(start * SAMPLE_RATE): int(end * SAMPLE_RATE)] for start, end in speech]
    return float(np.sqrt(np.mean(np.concatenate(parts) ** 2)))


def _slug(voice: str) -> str:
    return voice.replace("+", "-")
