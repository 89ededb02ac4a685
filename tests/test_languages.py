from faster_whisper.tokenizer import _LANGUAGE_CODES

from app.core.languages import WHISPER_LANGUAGES


def test_language_list_matches_faster_whisper():
    assert WHISPER_LANGUAGES == set(_LANGUAGE_CODES)
