"""An audio file uploaded with a request (``multipart/form-data``): read it, within ``MAX_UPLOAD_BYTES``.

A body announced larger than the cap (``Content-Length``) is refused with 413 before any of it is
read; a body without a length (chunked) is read up to the cap and refused there. The file part
itself must fit the cap too (the rest of the body is the form's few fields).
"""

from __future__ import annotations

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from app.core.errors import MissingFile, UploadTooLarge
from app.core.settings import Settings
from app.core.validation import Upload

#: Room for the form's other fields and the multipart framing, besides the file.
FORM_OVERHEAD_BYTES = 64 * 1024


def is_upload() -> bool:
    return request.mimetype == "multipart/form-data"


def allow_upload_body(settings: Settings) -> None:
    """Let this request's body be as large as an upload (call before anything reads it)."""
    request.max_content_length = settings.max_upload_bytes + FORM_OVERHEAD_BYTES


def read_upload(settings: Settings, field: str = "file") -> tuple[dict[str, str], list[tuple[str, str]], Upload]:
    """The form's single fields, its fields given as lists (``name[]``), and the uploaded file."""
    too_large = UploadTooLarge(f"The upload is larger than {settings.max_upload_bytes:,} bytes "
                               f"(MAX_UPLOAD_BYTES), the most accepted here.")
    try:
        files, form = request.files, request.form
    except RequestEntityTooLarge:
        raise too_large from None
    part = files.get(field)
    if part is None:
        raise MissingFile(f"Send the audio as the '{field}' part of a multipart/form-data body.")
    data = part.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise too_large
    if not data:
        raise MissingFile(f"The '{field}' part is empty.")
    singles = {name: form[name] for name in form if not name.endswith("[]")}
    lists = [(name, value) for name in form if name.endswith("[]") for value in form.getlist(name)]
    # The file's own name, without a client's directories or control characters (it is shown and logged).
    name = (part.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    filename = "".join(char for char in name if char.isprintable())[:255] or "audio"
    return singles, lists, Upload(filename=filename, data=data)
