"""Long recordings transcribed by several workers at once.

A recording longer than ``CHUNK_THRESHOLD_SECONDS``, on a queue that another worker listens to
as well, is transcribed in pieces by the job that downloaded it (the *parent*) and any worker
that is free:

1. the parent's engine host cuts the audio into pieces of about ``CHUNK_SECONDS``, each cut in a
   pause between sentences (``workers.decoding.plan_pieces``), written as FLAC;
2. the parent puts each piece's audio in Redis and enqueues one job per piece
   (``workers.jobs.transcribe_piece``) on its own queue, the last piece first;
3. the parent transcribes pieces itself from the first on, while other workers take them from
   the last; a piece is claimed once (``SET NX``), by the parent or by its piece's job;
4. the parent waits for the pieces others took, takes over any piece whose job is not running
   (it failed, waits for a retry, was put back on its queue, or its worker stopped beating), and
   stitches the pieces' segments, in order and shifted by each piece's start, into one transcript.

Why a parent that works and waits, rather than one that ends and leaves the stitching to a last
job depending on the others? The client's job stays one job: its status, progress, cancel,
timeout, retries and quota unit are those of any job; and a worker that gets no help loses
nothing, it transcribes every piece itself.

Whoever transcribes a piece reads the same FLAC, so its words are the same; a piece taken over
just as its job started may be transcribed twice, never lost. Redis holds the pieces' audio in
the meantime, about 17 kB per second of audio (60 MB for an hour), each deleted once the piece is
transcribed, everything expiring with the parent's timeout.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from redis import Redis
from rq import Queue, Worker
from rq.job import Job, JobStatus
from rq.utils import now

from app.core.jobs import retry_policy
from app.core.options import EngineOptions
from app.core.settings import Settings
from workers import context
from workers.decoding import Piece
from workers.engines import Segment, SegmentCallback, Transcript

log = logging.getLogger(__name__)

TRANSCRIBE_PIECE = "workers.jobs.transcribe_piece"
#: Seconds between two looks at the pieces other workers are transcribing.
POLL_INTERVAL = 0.25
#: Seconds without a heartbeat after which a running piece job's worker is taken for lost (a worker
#: beats every 5 s while it runs a job; RQ's own maintenance would notice later, or never, if
#: every other worker is busy like the parent).
LOST_AFTER = 20
#: Piece-job states in which nobody is transcribing the piece (and, looked at after its result,
#: it has none): the parent takes it over.
NOT_RUNNING = {JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED, JobStatus.SCHEDULED, JobStatus.QUEUED,
               JobStatus.DEFERRED, JobStatus.FINISHED}

# Claim a piece for ARGV[1] (for ARGV[2] s) while its audio is there: once it is gone, the piece was transcribed,
# or its parent ended and deleted its keys, and a claim then would be left behind. True if ARGV[1] had it already.
_CLAIM = """
local claimant = redis.call('GET', KEYS[1])
if claimant then
    if claimant == ARGV[1] then return 1 end
    return 0
end
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""

# Set the claim to ARGV[2] if it is ARGV[1] (a take-over), atomically.
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
    return 1
end
return 0
"""


def piece_job_id(parent_id: str, index: int) -> str:
    return f"{parent_id}-piece-{index}"


class PieceStore:
    """The Redis keys of one parent's pieces: each piece's audio, who claimed it, its result."""

    def __init__(self, connection: Redis, parent_id: str, ttl: int = 3600) -> None:
        self.connection = connection
        self.prefix = f"ytcaption:pieces:{parent_id}"
        self.ttl = ttl

    def _key(self, index: int, what: str) -> str:
        return f"{self.prefix}:{index}:{what}"

    def put_audio(self, pipe: Any, index: int, data: bytes) -> None:
        pipe.set(self._key(index, "audio"), data, ex=self.ttl)

    def audio(self, index: int) -> bytes | None:
        return self.connection.get(self._key(index, "audio"))

    def claim(self, index: int, owner: str) -> bool:
        """Claim the piece for ``owner`` if nobody has and its audio is still there; true also if it already
        had it (a retry of the same job)."""
        return bool(self.connection.eval(_CLAIM, 2, self._key(index, "claim"), self._key(index, "audio"), owner,
                                         self.ttl))

    def claimant(self, index: int) -> str | None:
        value = self.connection.get(self._key(index, "claim"))
        return value.decode() if value else None

    def take_over(self, index: int, previous: str | None, owner: str) -> bool:
        """Give the piece to ``owner`` if ``previous`` holds it (or, for None, if nobody does)."""
        if previous is None:
            return self.claim(index, owner)
        return bool(self.connection.eval(_TAKE_OVER, 1, self._key(index, "claim"), previous, owner))

    def save_result(self, index: int, transcript: Transcript, offset: float, by: str) -> None:
        """Store the piece's segments, shifted to the recording's timeline; drop its audio."""
        record = {"language": transcript.language, "speech_seconds": transcript.speech_seconds, "by": by,
                  "segments": [_shifted(segment, offset).as_dict() for segment in transcript.segments]}
        with self.connection.pipeline() as pipe:
            pipe.set(self._key(index, "result"), json.dumps(record), ex=self.ttl)
            pipe.delete(self._key(index, "audio"))
            pipe.execute()

    def result(self, index: int) -> dict[str, Any] | None:
        value = self.connection.get(self._key(index, "result"))
        return json.loads(value) if value else None

    def delete(self, count: int) -> None:
        self.connection.delete(*(self._key(index, what) for index in range(count)
                                 for what in ("audio", "claim", "result")))


def _shifted(segment: Segment, offset: float) -> Segment:
    """``segment`` (and its words) on the recording's timeline: ``offset`` seconds later."""
    words = tuple(replace(word, start=round(word.start + offset, 3), end=round(word.end + offset, 3))
                  for word in segment.words)
    return replace(segment, start=round(segment.start + offset, 3), end=round(segment.end + offset, 3), words=words)


def others_listening(job: Job) -> bool:
    """Whether a worker other than this job's listens to the job's queue (else nobody would help)."""
    return any(worker.name != job.worker_name and job.origin in worker.queue_names()
               for worker in Worker.all(connection=job.connection))


@dataclass
class Stitched:
    transcript: Transcript
    pieces: int
    #: Pieces transcribed by other workers.
    helped: int


def transcribe_in_pieces(job: Job, settings: Settings, path: Path, directory: Path, *, language: str | None,
                         model: str, max_duration: float | None, on_progress: Callable[[float], None],
                         on_duration: Callable[[float], None],
                         options: EngineOptions = EngineOptions(),
                         on_segment: SegmentCallback | None = None) -> Stitched | None:
    """Transcribe the audio at ``path`` in pieces with whichever workers are free.

    None if the audio makes a single piece (the caller transcribes it as usual). ``on_progress``
    gets the fraction done and is called at least every ``POLL_INTERVAL`` while the job waits:
    it is where a cancel, the timeout or a lost ownership stops the job (``workers.jobs.Progress``).
    ``on_segment`` gets the segments in time order: a piece's, once it and every piece before it are done.
    """
    engine = context.engine()
    duration, pieces = engine.split(str(path), str(directory), settings.chunk_seconds, max_duration)
    if len(pieces) < 2:
        return None
    on_duration(duration)  # the job's timeout, from which the pieces' keys take theirs
    store = PieceStore(job.connection, job.id, ttl=int(job.timeout or settings.job_timeout_floor) + 3600)
    job.meta["pieces"] = len(pieces)  # for ``abandon``, should this horse die before its ``finally``
    job.save_meta()
    _enqueue(job, settings, store, pieces, language, model, options)
    log.info("transcribing in pieces", extra={"pieces": len(pieces), "audio_seconds": round(duration, 1)})
    results: dict[int, dict[str, Any]] = {}
    told = 0  # pieces whose segments went to on_segment

    def tell() -> None:
        nonlocal told
        while on_segment is not None and told in results:
            for segment in results[told]["segments"]:
                segment = Segment.from_dict(segment)
                on_segment(segment, min(1.0, segment.end / duration))
            told += 1

    def report(current: Piece | None = None, fraction: float = 0.0) -> None:
        done = sum(pieces[index].end - pieces[index].start for index in results)
        if current is not None:
            done += fraction * (current.end - current.start)
        on_progress(min(1.0, done / duration))

    def transcribe_here(piece: Piece) -> None:
        transcript = engine.transcribe(piece.path, language=language, model=model, options=options,
                                       on_progress=lambda fraction: report(piece, fraction))
        store.save_result(piece.index, transcript, piece.start, by=job.id)
        results[piece.index] = store.result(piece.index)
        tell()

    try:
        for piece in pieces:
            if store.claim(piece.index, job.id):
                transcribe_here(piece)
        while len(results) < len(pieces):
            for piece in pieces:
                if piece.index in results:
                    continue
                if (result := store.result(piece.index)) is not None:
                    results[piece.index] = result
                    tell()
                elif _abandoned(job, piece, store):
                    log.info("taking over a piece nobody is transcribing", extra={"piece": piece.index})
                    transcribe_here(piece)
            report()
            if len(results) < len(pieces):
                time.sleep(POLL_INTERVAL)
    finally:
        _cancel_piece_jobs(job, len(pieces))
        store.delete(len(pieces))
    return _stitch(results, pieces, duration, model, language, job.id)


def _enqueue(job: Job, settings: Settings, store: PieceStore, pieces: list[Piece], language: str | None,
             model: str, options: EngineOptions) -> None:
    queue = Queue(job.origin, connection=job.connection)
    with job.connection.pipeline() as pipe:  # one transaction: RQ starts it (MULTI) at the first enqueue
        for piece in reversed(pieces):  # other workers start from the last piece, the parent from the first
            seconds = piece.end - piece.start
            queue.enqueue(
                TRANSCRIBE_PIECE,
                kwargs={"parent_id": job.id, "index": piece.index, "start": piece.start, "language": language,
                        "model": model, **({"options": options.as_job()} if options.as_job() else {})},
                job_id=piece_job_id(job.id, piece.index),
                job_timeout=int(settings.job_timeout_floor + settings.job_timeout_factor * seconds),
                result_ttl=600, failure_ttl=settings.result_ttl, ttl=store.ttl,
                retry=retry_policy(settings),
                description=f"piece {piece.index + 1}/{len(pieces)} of {job.id}",
                meta={"parent": job.id, "stage": "queued", "progress": 0},
                pipeline=pipe,
            )
        for piece in pieces:
            store.put_audio(pipe, piece.index, Path(piece.path).read_bytes())
        pipe.execute()


def _abandoned(job: Job, piece: Piece, store: PieceStore) -> bool:
    """Take ``piece`` over if its claimant is not transcribing it (its job not running); say whether."""
    claimant = store.claimant(piece.index)
    piece_job = Job.fetch_many([piece_job_id(job.id, piece.index)], connection=job.connection)[0]
    if piece_job is not None and piece_job.get_status(refresh=False) not in NOT_RUNNING and not _lost(piece_job):
        return False
    return store.take_over(piece.index, claimant, job.id)


def _lost(piece_job: Job) -> bool:
    beat = piece_job.last_heartbeat or piece_job.started_at
    return (piece_job.get_status(refresh=False) == JobStatus.STARTED and beat is not None
            and (now() - beat).total_seconds() > LOST_AFTER)


def abandon(job: Job) -> None:
    """Clear up after a parent whose horse ended without its ``finally`` (stopped on a cancel, killed).

    Its piece jobs still on their queue are cancelled, its keys deleted; a piece job already
    running stops by itself (it sees its parent has ended). Called from RQ's callbacks.
    """
    count = job.get_meta(refresh=True).get("pieces")
    if count:
        _cancel_piece_jobs(job, count)
        PieceStore(job.connection, job.id).delete(count)


def _cancel_piece_jobs(job: Job, count: int) -> None:
    """Take the piece jobs that have not run off their queue (a running one sees its parent ended)."""
    for piece_job in Job.fetch_many([piece_job_id(job.id, index) for index in range(count)],
                                    connection=job.connection):
        if piece_job is not None and piece_job.get_status(refresh=False) in (
                JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
            try:
                piece_job.cancel()
            except Exception:  # it started meanwhile: it will see its parent has ended
                log.debug("piece job %s could not be cancelled", piece_job.id, exc_info=True)


def _stitch(results: dict[int, dict[str, Any]], pieces: list[Piece], duration: float, model: str,
            language: str | None, parent_id: str) -> Stitched:
    segments = [Segment.from_dict(segment) for index in range(len(pieces)) for segment in results[index]["segments"]]
    speech = [result["speech_seconds"] for result in results.values()]
    detected = [result["language"] for result in results.values() if result["speech_seconds"] != 0]
    transcript = Transcript(
        language=language or (detected[0] if detected else results[0]["language"]),
        duration=duration, model=model, segments=segments,
        speech_seconds=None if None in speech else round(sum(speech), 3),
    )
    helped = sum(1 for result in results.values() if result["by"] != parent_id)
    return Stitched(transcript, len(pieces), helped)
