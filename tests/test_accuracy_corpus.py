"""The accuracy bench's corpus holds what it declares, and its measures count what they say (no model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import accuracy, corpus, prose
from bench.corpus import SAMPLE_RATE, Clip
from workers.engines import Segment


def dbfs(samples: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def cut(audio: np.ndarray, span: tuple[float, float]) -> np.ndarray:
    return audio[round(span[0] * SAMPLE_RATE): round(span[1] * SAMPLE_RATE)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Clip]:
    return {clip.name: clip for clip in corpus.make(tmp_path_factory.mktemp("corpus"), corpus.QUICK)}


def test_every_clip_lasts_its_declared_duration_with_its_timeline_inside(clips):
    for clip in clips.values():
        rate, audio = corpus.read_wav(clip.path)
        assert rate == SAMPLE_RATE
        assert len(audio) / SAMPLE_RATE == pytest.approx(clip.duration, abs=1 / SAMPLE_RATE), clip.name
        ends = [edge for span in clip.speech for edge in span]
        assert ends == sorted(ends) and all(0 <= edge <= clip.duration for edge in ends), clip.name
        assert clip.speech_seconds + sum(end - start for start, end in clip.silent_parts()) == pytest.approx(
            clip.duration, abs=1e-6)


def test_speech_is_where_the_timeline_says_and_nowhere_else(clips):
    plan = corpus.QUICK
    clip = clips["silence-speech-silence"]
    _, audio = corpus.read_wav(clip.path)
    assert clip.speech[0][0] == pytest.approx(plan.padding_seconds, abs=0.01)
    assert clip.speech[-1][1] == pytest.approx(clip.duration - plan.padding_seconds, abs=0.01)
    for span in clip.speech:
        assert dbfs(cut(audio, span)) > corpus.SPEECH_DBFS - 3
    for start, end in clip.silent_parts():
        if end - start >= accuracy.MIN_SILENCE:
            assert dbfs(cut(audio, (start, end))) == pytest.approx(plan.floor_dbfs, abs=1.5)
    assert not corpus.read_wav(clips["silence-zeros"].path)[1].any()
    assert dbfs(corpus.read_wav(clips["silence-floor"].path)[1]) == pytest.approx(plan.floor_dbfs, abs=0.5)


def test_each_sentence_has_its_span_and_the_reference_is_what_was_spoken(clips):
    sentences = prose.sentences(corpus.QUICK.passage)
    for clip in clips.values():
        if clip.group in ("voices", "silence-speech-silence") or clip.group.startswith("noise"):
            assert len(clip.speech) == len(sentences), clip.name
            assert clip.reference == " ".join(sentences)
    repeat = clips["repeatability"]
    assert repeat.reference == " ".join(prose.sentences(prose.LONG_FORM[0])[: corpus.QUICK.repeat_sentences])
    assert len(repeat.speech) == corpus.QUICK.repeat_sentences
    assert " ".join(sum(corpus.opening(18), [])) == " ".join(prose.LONG_FORM[:4])  # the full plan's: 4 paragraphs


def test_noise_is_mixed_at_the_declared_snr(clips):
    (snr,) = corpus.QUICK.snrs
    clip = next(clip for clip in clips.values() if clip.group == f"noise {snr:g} dB")
    _, audio = corpus.read_wav(clip.path)
    pauses = np.concatenate([cut(audio, part) for part in clip.silent_parts()])
    # The speech alone was scaled to SPEECH_DBFS; the pauses between sentences hold only the noise.
    assert dbfs(pauses) == pytest.approx(corpus.SPEECH_DBFS - snr, abs=2)


def test_the_corpus_is_the_same_samples_every_time(clips, tmp_path):
    for clip in corpus.make(tmp_path, corpus.QUICK):
        assert clip.path.read_bytes() == clips[clip.name].path.read_bytes(), clip.name


def test_a_voice_espeak_ng_lacks_is_refused_not_spoken_in_its_default_voice():
    with pytest.raises(RuntimeError, match="no voice"):
        corpus.check_voices({"en-us+nosuchvariant"})


def test_a_window_with_speech_and_no_segment_is_missing():
    clip = Clip("c", "voices", "", Path("c.wav"), 90.0, "words", ((0.0, 10.0), (40.0, 42.0), (60.0, 90.0)))
    assert accuracy.needed_windows(clip) == [(0.0, 30.0), (60.0, 90.0)]  # 30–60 s has 2 s of speech only
    assert accuracy.missing_windows(clip, [Segment(5.0, 8.0, "words")]) == (1, 2)
    assert accuracy.missing_windows(clip, [Segment(5.0, 8.0, "a"), Segment(29.0, 61.0, "b")]) == (0, 2)
    assert accuracy.missing_windows(clip, [Segment(5.0, 8.0, "a"), Segment(29.0, 90.0, ". . .")]) == (1, 2)


def test_words_count_as_hallucinated_only_inside_long_silences():
    clip = Clip("s", "silence-speech-silence", "", Path("s.wav"), 50.0, "a b", ((20.0, 25.0), (25.3, 30.0)))
    segments = [Segment(1.0, 3.0, "Thank you."), Segment(19.0, 26.0, "a b"), Segment(25.05, 25.25, "oh"),
                Segment(31.0, 40.0, "and so on, again")]
    assert accuracy.hallucinated_words(clip, segments) == 2 + 4
    silence = Clip("z", "silence", "", Path("z.wav"), 30.0)
    assert accuracy.hallucinated_words(silence, [Segment(0.0, 30.0, "You")]) == 1
