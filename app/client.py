"""The client behind ``ytcaption transcribe``: submit URLs and files to a server, show progress, write transcripts.

It talks to the server only over HTTP (docs/api.md), as any other client would, so it works against a server on
another machine. HTTP goes through the standard library (``http.client``; ``Server.exchange`` says why not
urllib): httpx is not among ytcaption's runtime dependencies (only the test extra brings it, through openai),
and a request a second needs no more. It connects directly, without the HTTP(S)_PROXY variables.

Progress goes to stderr, so that stdout carries nothing but transcripts: a live bar per input at a terminal
(rich), one plain line per stage change elsewhere (rich's bars print only their last state when not at a
terminal).
"""

from __future__ import annotations

import http.client
import json
import mimetypes
import os
import re
import ssl
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Column

DEFAULT_SERVER = "http://127.0.0.1:8000"

#: Exit status after Ctrl-C, as a shell reports a command killed by SIGINT (128 + 2).
INTERRUPTED = 130

#: Seconds a request may wait on the network (to connect, to send a block, for the answer).
TIMEOUT = 30.0
UPLOAD_TIMEOUT = 120.0

#: Seconds between polls when the server does not say (the status answer's Retry-After is 1 s).
DEFAULT_POLL = 1.0

#: How long status polls go on without an answer (a server restarting) before the job is given up on.
UNREACHABLE_GRACE = 60.0

UPLOAD_BLOCK = 256 * 1024


class ServerError(Exception):
    """The server refused a request or could not be reached; ``message`` says why in one sentence."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    @property
    def kind(self) -> str:
        """The server's error code, or what kind of failure it was when it gave none."""
        return self.code or ("unreachable" if self.status is None else f"http_{self.status}")


@dataclass
class Answer:
    status: int
    headers: Message
    body: bytes

    def json(self) -> dict:
        try:
            return json.loads(self.body)
        except ValueError:
            raise ServerError(f"The answer (HTTP {self.status}) is not JSON: is this a ytcaption server?",
                              status=self.status) from None


def retry_after(headers: Message, default: float = DEFAULT_POLL) -> float:
    """The seconds a ``Retry-After`` header asks for (a number; an HTTP date is taken as ``default``)."""
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return default


def as_json(options: dict[str, str]) -> dict[str, str | bool]:
    """Form fields as a JSON body has them: ``cache`` a boolean."""
    return {key: value == "true" if key == "cache" else value for key, value in options.items()}


def error_from(answer: Answer) -> ServerError:
    """The server's own sentence from its ``{"error": code, "message": sentence}`` body, else the HTTP status."""
    try:
        payload = json.loads(answer.body)
        return ServerError(str(payload["message"]), status=answer.status, code=str(payload.get("error")))
    except (ValueError, KeyError, TypeError):
        return ServerError(f"The server answered HTTP {answer.status} without an explanation.", status=answer.status)


class Upload:
    """A ``multipart/form-data`` body: the form fields, then the file, read block by block as it is sent.

    Iterating again starts over (a request refused with 429 is sent again); ``on_block`` hears the bytes
    sent so far, for the upload's progress bar.
    """

    def __init__(self, path: Path, fields: dict[str, str], on_block: Callable[[int, int], None] | None = None) -> None:
        self.path = path
        self.boundary = f"ytcaption-{uuid.uuid4().hex}"
        self.on_block = on_block
        head = b"".join(self._part(name, value.encode()) for name, value in fields.items())
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        head += self._part("file", None, filename=path.name, content_type=content_type)
        self.head = head
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.length = len(self.head) + path.stat().st_size + len(self.tail)

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _part(self, name: str, value: bytes | None, *, filename: str | None = None,
              content_type: str | None = None) -> bytes:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            # What browsers do (the WHATWG form encoding): quotes and line breaks percent-encoded, the rest as is.
            quoted = filename.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
            disposition += f'; filename="{quoted}"'
        lines = [f"--{self.boundary}", f"Content-Disposition: {disposition}"]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        header = ("\r\n".join(lines) + "\r\n\r\n").encode()
        return header + value + b"\r\n" if value is not None else header

    def __iter__(self) -> Iterator[bytes]:
        sent = len(self.head)
        yield self.head
        with self.path.open("rb") as file:
            while block := file.read(UPLOAD_BLOCK):
                yield block
                sent += len(block)
                if self.on_block:
                    self.on_block(sent, self.length)
        yield self.tail


class Server:
    """A ytcaption server's API (``/api/v1``), authenticated with one key.

    A rate-limited request (429) is sent again after its ``Retry-After``; any other refusal raises
    ``ServerError`` with the server's sentence. ``ValueError`` for an address that is not an http(s) URL.
    """

    def __init__(self, base_url: str, api_key: str, on_wait: Callable[[str], None] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.parts = urllib.parse.urlsplit(self.base_url)
        if self.parts.scheme not in ("http", "https") or not self.parts.hostname:
            raise ValueError(f"--server {base_url!r} is not an http(s) URL such as {DEFAULT_SERVER}.")
        self.api_key = api_key
        #: Told when a 429 makes the client wait, so that a bar standing still for a minute is explained.
        self.on_wait = on_wait

    def request(self, method: str, path: str, *, payload: dict | None = None, upload: Upload | None = None,
                timeout: float = TIMEOUT) -> Answer:
        headers = {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"}
        body: bytes | Upload | None = None
        if payload is not None:
            body = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        elif upload is not None:
            body = upload
            headers["Content-Type"] = upload.content_type
            headers["Content-Length"] = str(upload.length)
        while True:
            answer = self.exchange(method, f"{self.parts.path}/api/v1{path}", headers, body, timeout)
            if 200 <= answer.status < 300:
                return answer
            if answer.status != 429:
                raise error_from(answer)
            seconds = max(DEFAULT_POLL, retry_after(answer.headers))  # "0" at a minute's end: no busy loop
            if self.on_wait:
                self.on_wait(f"Rate limited by the server: waiting {seconds:g} s ({error_from(answer).message})")
            time.sleep(seconds)

    def exchange(self, method: str, target: str, headers: dict[str, str], body: bytes | Upload | None,
                 timeout: float) -> Answer:
        """One request and its answer, over a connection of its own.

        http.client rather than urllib.request: urllib sends ``Connection: close``, and gunicorn, refusing an
        upload too large (413) on such a connection, stops reading and resets it while the file is still being
        sent: urllib reports only the reset. Here the connection stays open (gunicorn reads the rest and
        answers), and even after a reset the answer sent before it is read.
        """
        if self.parts.scheme == "https":
            connection = http.client.HTTPSConnection(self.parts.hostname, self.parts.port, timeout=timeout,
                                                     context=ssl.create_default_context())
        else:
            connection = http.client.HTTPConnection(self.parts.hostname, self.parts.port, timeout=timeout)
        try:
            try:
                connection.request(method, target, body=body, headers=headers)
            except (BrokenPipeError, ConnectionResetError):
                if connection.sock is None:  # not connected: nothing to read an answer from
                    raise
            try:
                response = connection.getresponse()
                return Answer(response.status, response.headers, response.read())
            except (OSError, http.client.HTTPException) as error:
                if isinstance(body, Upload):
                    raise ServerError(
                        f"The server closed the connection during the upload of {body.path.name} "
                        f"({body.length / 1e6:.1f} MB) without an answer ({error}).") from None
                raise ServerError(f"No answer from the ytcaption server at {self.base_url} ({error}).") from None
        except OSError as error:  # refused, unknown host, timeout while connecting
            reason = error.strerror or str(error) or type(error).__name__
            raise ServerError(f"Cannot reach the ytcaption server at {self.base_url} ({reason}).") from None
        finally:
            connection.close()

    def submit_url(self, url: str, options: dict[str, str]) -> str:
        answer = self.request("POST", "/transcribe/async/submit", payload={"youtube_url": url, **as_json(options)})
        return answer.json()["job_id"]

    def submit_file(self, path: Path, options: dict[str, str], on_block: Callable[[int, int], None]) -> str:
        # The timeout is per socket operation, not for the whole body; the server may take a while to answer
        # once the whole file is there.
        answer = self.request("POST", "/transcribe/async/submit", upload=Upload(path, options, on_block),
                              timeout=UPLOAD_TIMEOUT)
        return answer.json()["job_id"]

    def submit_batch(self, urls: list[str], options: dict[str, str]) -> tuple[str, list[str]]:
        answer = self.request("POST", "/transcribe/async/batch",
                              payload={"videos": [{"youtube_url": url, **as_json(options)} for url in urls]}).json()
        return answer["batch_id"], answer["job_ids"]

    def job_status(self, job_id: str) -> tuple[dict, float]:
        """The job's status and the seconds after which to ask again."""
        answer = self.request("GET", f"/transcribe/async/status/{urllib.parse.quote(job_id)}")
        # A floor, so that a server saying 0 does not make a busy loop of the client.
        return answer.json(), max(0.2, retry_after(answer.headers))

    def batch_status(self, batch_id: str) -> dict:
        return self.request("GET", f"/transcribe/async/batch/{urllib.parse.quote(batch_id)}").json()

    def cancel(self, job_id: str) -> dict:
        return self.request("DELETE", f"/transcribe/async/cancel/{urllib.parse.quote(job_id)}").json()

    def transcript(self, transcription_id: str, fmt: str) -> str:
        answer = self.request("GET", f"/transcriptions/{urllib.parse.quote(transcription_id)}?format={fmt}")
        return answer.body.decode("utf-8")


# --- the inputs --------------------------------------------------------------------------------------------


@dataclass(eq=False)  # each input is itself, whatever its fields
class Item:
    """One input of the command line, and its job as far as the client knows it."""

    source: str
    path: Path | None  # a local file to upload, else ``source`` is a URL
    name: str  # the transcript's file name without extension
    job_id: str | None = None
    status: str = "submitting"
    stage: str = "submitting"
    progress: int = 0
    detail: str = ""
    transcription_id: str | None = None
    error: str | None = None
    transcript: str | None = None
    written_to: Path | None = None
    next_poll: float = 0.0
    failing_since: float | None = None

    @property
    def ended(self) -> bool:
        return self.error is not None or self.transcript is not None or self.written_to is not None

    def follow(self, status: dict) -> None:
        """Take in a status document from the server (a job's, or a video's in a batch status)."""
        self.status, self.failing_since = status["status"], None
        self.stage = status.get("stage", self.status)
        self.progress = int(status.get("progress", 0))
        attempt, attempts = status.get("attempt"), status.get("max_attempts")
        if self.stage == "queued" and status.get("position"):
            self.detail = f"{status['position']} ahead"
        elif attempt and attempts and attempt > 1:
            self.detail = f"attempt {attempt} of {attempts}"
        else:
            self.detail = ""
        if self.status == "completed":
            self.transcription_id = status["result"]["transcription_id"]
            self.progress = 100
        elif self.status == "failed":
            error = status.get("error") or {}
            self.error = f"{error.get('type', 'failed')}: {error.get('message', 'the job failed.')}"
        elif self.status == "cancelled":
            self.error = "cancelled: the job was cancelled on the server."
        elif self.status == "expired":  # a batch's video whose record the server no longer keeps
            self.error = "expired: the server no longer keeps this job's record."


def is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


def name_for(source: str, path: Path | None) -> str:
    """A file name for the transcript: the file's stem, or the URL's video id (``v=``) or last path part."""
    if path is not None:
        stem = path.stem
    else:
        parts = urllib.parse.urlsplit(source)
        video_id = urllib.parse.parse_qs(parts.query).get("v", [""])[0]
        last = [segment for segment in parts.path.split("/") if segment]
        stem = video_id or (Path(urllib.parse.unquote(last[-1])).stem if last else parts.hostname or "")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")
    return safe or "transcript"


def make_items(sources: list[str]) -> list[Item]:
    """An item per input; ``ValueError`` for one that is neither an http(s) URL nor a readable file.

    Names are made unique by a ``-2``, ``-3``... suffix, so that two inputs never write the same file.
    """
    items: list[Item] = []
    taken: set[str] = set()
    for source in sources:
        path = None
        if not is_url(source):
            path = Path(source)
            if not path.is_file():
                hint = " (a URL starts with https://)" if not path.exists() and "." in source.split("/")[0] else ""
                raise ValueError(f"{source!r} is neither an http(s) URL nor a file{hint}.")
            if not os.access(path, os.R_OK):
                raise ValueError(f"{source!r} cannot be read (permission denied).")
        name = base = name_for(source, path)
        counter = 1
        while name in taken:
            counter += 1
            name = f"{base}-{counter}"
        taken.add(name)
        items.append(Item(source=source, path=path, name=name))
    return items


# --- what the person at the terminal sees ---------------------------------------------------------------


class Display:
    """Each input's stage and percent on stderr: live bars at a terminal, a plain line per stage change elsewhere."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal and not console.is_dumb_terminal
        # Bounded columns: past the terminal's width rich would squeeze out the names and bars instead.
        self.progress = Progress(
            TextColumn("{task.description}", table_column=Column(no_wrap=True, overflow="ellipsis", max_width=24)),
            BarColumn(bar_width=None, table_column=Column(ratio=1, min_width=10, max_width=40)),
            TaskProgressColumn(),
            TextColumn("{task.fields[stage]}", table_column=Column(no_wrap=True, overflow="ellipsis", max_width=36)),
            TimeElapsedColumn(), console=console, redirect_stdout=False, redirect_stderr=False,
            refresh_per_second=4, disable=not self.live)
        self.tasks: dict[int, int] = {}
        self.shown: dict[int, str] = {}

    def __enter__(self) -> Display:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def stage_text(self, item: Item) -> str:
        """The stage; once ended, the error's type, or where the transcript went (a bar has room for a file name)."""
        if item.error is not None:
            return item.error.split(":", 1)[0]
        if item.written_to is not None:
            return f"written to {item.written_to.name if self.live else item.written_to}"
        return f"{item.stage} ({item.detail})" if item.detail else item.stage

    def show(self, item: Item) -> None:
        text = self.stage_text(item)
        if self.live:
            style = "red" if item.error else "green" if item.ended else ""
            stage = f"[{style}]{escape(text)}[/]" if style else escape(text)
            if id(item) not in self.tasks:
                self.tasks[id(item)] = self.progress.add_task(escape(item.name), total=100, stage=stage)
            self.progress.update(self.tasks[id(item)], completed=item.progress, stage=stage)
            if item.ended:  # its clock stops
                self.progress.stop_task(self.tasks[id(item)])
        elif self.shown.get(id(item)) != text:
            self.shown[id(item)] = text
            self.console.print(f"{item.name}: {text} ({item.progress}%)", markup=False, highlight=False,
                               soft_wrap=True)


# --- the command -----------------------------------------------------------------------------------------


@dataclass
class Options:
    fmt: str = "txt"
    output: Path | None = None
    language: str | None = None
    model: str | None = None
    wait: bool = True
    cache: bool = True

    @property
    def job_options(self) -> dict[str, str]:
        """The submit fields the person gave, as form fields; the others are left to the server's defaults."""
        given = {key: value for key, value in (("language", self.language), ("model", self.model)) if value}
        return given if self.cache else {**given, "cache": "false"}


def output_dir(items: list[Item], output: Path | None) -> Path | None:
    """The directory transcripts go to: ``-o`` with several inputs (made if missing) or an existing directory."""
    if output is None:
        return None
    if len(items) > 1:
        if output.exists() and not output.is_dir():
            raise ValueError(f"-o {output}: with several inputs, -o names a directory, and this is a file.")
        output.mkdir(parents=True, exist_ok=True)
        return output
    return output if output.is_dir() else None


class Transcriber:
    """Submits the items, follows their jobs, writes their transcripts; ``run`` returns the exit status."""

    def __init__(self, server: Server, items: list[Item], options: Options, console: Console, *,
                 out: Callable[[str], None] | None = None) -> None:
        self.server = server
        self.items = items
        self.options = options
        self.console = console
        self.out = out or sys.stdout.write
        self.directory = output_dir(items, options.output)
        self.batch_id: str | None = None
        self.batch_next_poll = 0.0

    def say(self, text: str) -> None:
        """A line on stderr; while the bars are live, rich prints it above them."""
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def run(self) -> int:
        display = Display(self.console)
        self.server.on_wait = self.say
        try:
            with display:
                self.submit(display)
                if self.options.wait:
                    self.watch(display)
        except KeyboardInterrupt:
            return self.cancel()
        if not self.options.wait:
            for item in self.items:
                if item.job_id is not None:
                    self.out(f"{item.job_id}\n")
        else:
            for item in self.items:
                if item.transcript is not None:
                    self.out(item.transcript if item.transcript.endswith("\n") else item.transcript + "\n")
        return self.report()

    def submit(self, display: Display) -> None:
        """Submit every item: URLs together as one batch when there are several, files one upload each."""
        for item in self.items:
            display.show(item)
        urls = [item for item in self.items if item.path is None]
        options = self.options.job_options
        if len(urls) > 1:
            try:
                self.batch_id, job_ids = self.server.submit_batch([item.source for item in urls], options)
            except ServerError as error:
                for item in urls:
                    item.error = f"{error.kind}: {error.message}"
                    display.show(item)
            else:
                for item, job_id in zip(urls, job_ids):
                    self.submitted(item, job_id, display)
        elif urls:
            self.submit_one(urls[0], lambda: self.server.submit_url(urls[0].source, options), display)
        for item in self.items:
            if item.path is not None:
                self.submit_one(item, self.uploader(item, display), display)

    def uploader(self, item: Item, display: Display) -> Callable[[], str]:
        """A function that uploads ``item``'s file, its bar showing the share sent."""

        def uploaded(sent: int, total: int) -> None:
            item.stage, item.progress = "uploading", sent * 100 // total
            display.show(item)

        return lambda: self.server.submit_file(item.path, self.options.job_options, uploaded)

    def submit_one(self, item: Item, send: Callable[[], str], display: Display) -> None:
        try:
            job_id = send()
        except ServerError as error:
            item.error = f"{error.kind}: {error.message}"
            display.show(item)
        else:
            self.submitted(item, job_id, display)

    def submitted(self, item: Item, job_id: str, display: Display) -> None:
        item.job_id, item.status, item.stage, item.progress = job_id, "pending", "queued", 0
        display.show(item)

    def watch(self, display: Display) -> None:
        """Poll until every job has ended, each when its last answer's ``Retry-After`` says; a batch in one request."""
        while waiting := [item for item in self.items if not item.ended]:
            now = time.monotonic()
            in_batch = [item for item in waiting if self.batch_id and item.path is None]
            if in_batch and self.batch_next_poll <= now:
                self.poll_batch(in_batch)
            for item in waiting:
                if item not in in_batch and item.next_poll <= now:
                    try:
                        status, item.next_poll = self.server.job_status(item.job_id)
                    except ServerError as error:
                        self.poll_failed([item], error)
                    else:
                        item.next_poll += time.monotonic()
                        item.follow(status)
            for item in waiting:
                if item.transcription_id and item.error is None:
                    self.fetch(item)
                display.show(item)
            pending = [item.next_poll for item in self.items if not item.ended and item not in in_batch]
            if any(not item.ended for item in in_batch):
                pending.append(self.batch_next_poll)
            if pending:
                time.sleep(max(0.0, min(pending) - time.monotonic()))

    def poll_batch(self, items: list[Item]) -> None:
        try:
            status = self.server.batch_status(self.batch_id)
        except ServerError as error:
            self.poll_failed(items, error)
            self.batch_next_poll = min(item.next_poll for item in items)
            return
        by_job = {video["job_id"]: video for video in status["videos"]}
        for item in items:
            if item.job_id in by_job:
                item.follow(by_job[item.job_id])
        # The batch status has no Retry-After of its own: a job's is DEFAULT_POLL while it waits or runs.
        self.batch_next_poll = time.monotonic() + DEFAULT_POLL

    def poll_failed(self, items: list[Item], error: ServerError) -> None:
        """A status poll without an answer is asked again for a while (a server restarting); a refusal is final."""
        now = time.monotonic()
        for item in items:
            transient = error.status is None or error.status >= 500
            if transient and now - (item.failing_since or now) < UNREACHABLE_GRACE:
                item.failing_since = item.failing_since or now
                item.detail, item.next_poll = "no answer from the server, asking again", now + 2 * DEFAULT_POLL
            else:
                item.error = f"{error.kind}: {error.message}"

    def fetch(self, item: Item) -> None:
        """Download a completed job's transcript; write it to its file now, or keep it for stdout."""
        try:
            text = self.server.transcript(item.transcription_id, self.options.fmt)
        except ServerError as error:
            item.error = f"{error.kind}: {error.message}"
            return
        target = self.options.output
        if self.directory is not None:
            target = self.directory / f"{item.name}.{self.options.fmt}"
        if target is None:
            item.transcript = text
            return
        try:
            target.write_text(text, encoding="utf-8", newline="")
        except OSError as error:
            item.error = f"not_written: cannot write {target} ({error.strerror or error})."
            return
        item.written_to = target

    def cancel(self) -> int:
        """Ctrl-C: cancel on the server every job that has not ended, and say so."""
        running = [item for item in self.items if item.job_id is not None and not item.ended]
        try:
            for item in running:
                try:
                    answer = self.server.cancel(item.job_id)
                    state = "cancelled" if answer.get("status") == "cancelled" else "being stopped"
                    self.say(f"Interrupted: job {item.job_id} ({item.name}) {state}.")
                except ServerError as error:
                    self.say(f"Interrupted: job {item.job_id} ({item.name}) not cancelled: {error.message}")
        except KeyboardInterrupt:  # Ctrl-C again: stop asking
            self.say("Interrupted again: the jobs not yet cancelled go on.")
        if not running:
            self.say("Interrupted.")
        return INTERRUPTED

    def report(self) -> int:
        """Print each input's error; 0 only when every transcript was written (or every job submitted)."""
        failed = [item for item in self.items if item.error is not None]
        for item in failed:
            self.say(f"Error: {item.source}: {item.error}")
        return 1 if failed else 0


def transcriber(sources: list[str], server_url: str, api_key: str, options: Options) -> Transcriber:
    """``ytcaption transcribe``, ready to run; ``ValueError`` for an input or ``-o`` that cannot be used.

    Nothing is sent before every input is known to be usable: a typo in the third path submits nothing.
    """
    return Transcriber(Server(server_url, api_key), make_items(sources), options, Console(stderr=True))
