"""`ytcaption transcribe`, the terminal client: a real process against a real API (gunicorn) and worker.

What a person at a terminal sees is read through a pseudo-terminal (pexpect), escape sequences taken out;
without a terminal, stderr and stdout are read as a script would.
"""

import io
import json
import os
import re
import shutil
import subprocess

import pexpect
import pytest
from rq import Queue

from app.client import make_items
from app.core.redis_server import free_port
from tests.conftest import FIXTURES
from tests.helpers import (
    FIXTURE_TEXT,
    http,
    job_status,
    start_api,
    stop_process,
    wait_for,
    word_error_rate,
    ytcaption_command,
)

#: A terminal's control sequences (colours, cursor moves, cursor shown/hidden).
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

#: Spaces between two parts of a bar, and the colour codes around them as the terminal receives them.
GAP = r"(?:\s|\x1b\[[0-9;]*m)+"

#: Generous: the machine may be slow and busy with other tests.
TIMEOUT = 180


def create_user(tier: str = "pro", env: dict | None = None) -> str:
    """A new user's key, the way the README says: KEY=$(ytcaption users create ... | tail -1)."""
    command = f"{ytcaption_command()} users create --tier {tier} --email client{free_port()}@example.com | tail -1"
    return subprocess.run(["bash", "-c", command], check=True, capture_output=True, text=True, env=env).stdout.strip()


@pytest.fixture
def env(config, api_url) -> dict[str, str]:
    """The environment of a person who has set YTCAPTION_SERVER and YTCAPTION_API_KEY."""
    return {**os.environ, "YTCAPTION_SERVER": api_url, "YTCAPTION_API_KEY": create_user(), "TERM": "xterm-256color"}


def headers_of(env: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {env['YTCAPTION_API_KEY']}"}


def spawn(env: dict[str, str], *args: str) -> pexpect.spawn:
    """`ytcaption transcribe ARGS` in a pseudo-terminal of 40 x 160; ``child.seen`` keeps all it wrote."""
    child = pexpect.spawn(ytcaption_command(), ["transcribe", *args], env=env, encoding="utf-8",
                          timeout=TIMEOUT, dimensions=(40, 160))
    child.seen = io.StringIO()
    child.logfile_read = child.seen
    return child


def finish(child: pexpect.spawn) -> str:
    """Wait for the command to exit; what the terminal showed, without control sequences, a line a redraw."""
    child.expect(pexpect.EOF)
    child.close()
    return ESCAPES.sub("", child.seen.getvalue()).replace("\r\n", "\n").replace("\r", "\n")


def transcribe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`ytcaption transcribe ARGS` without a terminal, as in a script or a pipe."""
    return subprocess.run([ytcaption_command(), "transcribe", *args], env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)


def says(fixture: str, text: str) -> bool:
    """Whether ``text`` is what ``fixture`` says. The fox's sentence has 9 words, and the bundled tiny.en
    model hears two of them wrong ("jumped over a lazy dog"): 0.22, so it gets 0.3, as in test_uploads."""
    return word_error_rate(FIXTURE_TEXT[fixture], text) < (0.3 if fixture == "fox.m4a" else 0.2)


def subtitle_text(subtitles: str) -> str:
    """The spoken text of SRT or WebVTT subtitles: their lines without cue numbers, times and header."""
    return " ".join(line for line in subtitles.splitlines()
                    if line and line != "WEBVTT" and not line.isdigit() and "-->" not in line)


# --- with a server and a worker --------------------------------------------------------------------------


def test_a_terminal_sees_a_live_bar_with_stage_and_percent_and_gets_srt(env, worker_process, media_server, tmp_path):
    target = tmp_path / "lecture.srt"
    # 13 blocks of 4 KiB, 0.3 s apart: the download lasts about 4 s, long enough for a poll a second to see it.
    child = spawn(env, media_server.url("lecture.webm", delay=0.3), "--format", "srt", "-o", str(target))
    child.expect(rf"\d+%{GAP}downloading")
    child.expect(rf"100%{GAP}written to")
    seen = finish(child)
    assert child.exitstatus == 0, seen
    assert re.search(r"^lecture\s+━+\s+100%\s+written to lecture\.srt\s+0:00:\d\d$", seen, re.M), seen

    srt = target.read_text()
    cues = srt.strip().split("\n\n")
    assert all(re.fullmatch(r"\d+\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n.+", cue, re.S) for cue in cues), srt
    assert says("lecture.webm", subtitle_text(srt)), srt


def test_without_a_terminal_stages_are_plain_lines_and_the_transcript_goes_to_stdout(env, worker_process, media_server):
    result = transcribe(env, media_server.url("fox.m4a", delay=0.05))
    assert result.returncode == 0, result.stderr
    assert says("fox.m4a", result.stdout), result.stdout
    lines = result.stderr.splitlines()
    assert "\x1b" not in result.stderr and "━" not in result.stderr, result.stderr
    assert lines[0] == "fox: submitting (0%)" and "fox: queued (0%)" in lines, lines
    assert lines[-1] == "fox: completed (100%)", lines
    assert len(lines) == len(set(lines)), "a line per stage change, not one per poll"


def test_several_inputs_have_a_bar_each_and_a_file_each_in_the_directory(env, worker_process, media_server, tmp_path):
    directory = tmp_path / "out" / "subtitles"  # made by the command
    child = spawn(env, media_server.url("fox.m4a", delay=0.05), media_server.url("queue.webm", delay=0.05),
                  "--format", "vtt", "-o", str(directory))
    seen = finish(child)
    assert child.exitstatus == 0, seen
    for name in ("fox", "queue"):
        assert re.search(rf"^{name}\s+━+\s+100%\s+written to {name}\.vtt\s+0:00:\d\d$", seen, re.M), seen
    assert sorted(path.name for path in directory.iterdir()) == ["fox.vtt", "queue.vtt"]
    for name, fixture in (("fox", "fox.m4a"), ("queue", "queue.webm")):
        vtt = (directory / f"{name}.vtt").read_text()
        assert vtt.startswith("WEBVTT"), vtt
        assert says(fixture, subtitle_text(vtt)), vtt


def test_a_failed_input_is_reported_with_its_error_and_the_other_is_still_written(env, worker_process, media_server,
                                                                                   tmp_path):
    missing = media_server.url("no-such-video.webm")
    result = transcribe(env, media_server.url("fox.m4a"), missing, "-o", str(tmp_path / "out"))
    assert result.returncode == 1, result.stderr
    assert f"Error: {missing}: video_unavailable: The video host answered HTTP 404" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["fox.txt"]
    assert says("fox.m4a", (tmp_path / "out" / "fox.txt").read_text())


def test_ctrl_c_cancels_the_job_on_the_server_and_exits_130(env, worker_process, media_server):
    # 13 blocks of 4 KiB, 0.5 s apart: the download takes more than 6 s.
    child = spawn(env, media_server.url("lecture.webm", delay=0.5))
    child.expect(rf"\d+%{GAP}downloading")
    child.sendintr()
    seen = finish(child)
    assert child.exitstatus == 130, seen
    job_id = re.search(r"Interrupted: job (\S+) \(lecture\) (being stopped|cancelled)\.", seen).group(1)
    wait_for(lambda: job_status(env["YTCAPTION_SERVER"], headers_of(env), job_id)["status"] == "cancelled",
             timeout=TIMEOUT, message="the job to be cancelled")


def test_a_429_is_waited_out_and_the_transcript_still_comes(config, worker_process, media_server):
    """Three requests a minute: submit, a first poll, a second one... the fourth waits for the next minute."""
    process = start_api(port := free_port(), env={**os.environ, "RATE_LIMIT_PRO": "3"})
    try:
        env = {**os.environ, "YTCAPTION_SERVER": f"http://127.0.0.1:{port}", "YTCAPTION_API_KEY": create_user()}
        result = transcribe(env, media_server.url("fox.m4a"))
    finally:
        stop_process(process)
    assert result.returncode == 0, result.stderr
    assert "Rate limited by the server: waiting" in result.stderr, result.stderr
    assert says("fox.m4a", result.stdout), result.stdout


def test_a_local_file_is_uploaded_with_its_options_and_transcribed(env, worker_process, tmp_path):
    recording = tmp_path / "my recording.m4a"
    shutil.copy(FIXTURES / "fox.m4a", recording)
    target = tmp_path / "fox.json"
    result = transcribe(env, str(recording), "--language", "en", "--format", "json", "-o", str(target))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "my_recording: submitting (0%)" and "my_recording: uploading" in lines[1], lines
    assert lines[-1] == f"my_recording: written to {target} (100%)", lines
    document = json.loads(target.read_text())
    assert (document["filename"], document["language"]) == ("my recording.m4a", "en"), document
    assert says("fox.m4a", document["text"]), document["text"]


# --- with a server only ----------------------------------------------------------------------------------


def test_no_wait_prints_job_ids_the_server_knows(env, media_server):
    urls = [media_server.url("fox.m4a"), media_server.url("queue.webm")]
    result = transcribe(env, "--no-wait", *urls)
    assert result.returncode == 0, result.stderr
    job_ids = result.stdout.split()
    assert len(job_ids) == 2, result.stdout
    statuses = [job_status(env["YTCAPTION_SERVER"], headers_of(env), job_id) for job_id in job_ids]
    assert [status["youtube_url"] for status in statuses] == urls
    assert all(status["status"] == "pending" for status in statuses)  # no worker runs


def test_no_cache_asks_for_runs_of_their_own(env, media_server, redis):
    """Identical URLs share one job on the server, unless --no-cache (app.core.sharing)."""
    url = media_server.url("fox.m4a")
    shared = transcribe(env, "--no-wait", url)
    afresh = transcribe(env, "--no-wait", "--no-cache", url)
    again = transcribe(env, "--no-wait", url)
    assert shared.returncode == afresh.returncode == again.returncode == 0, (shared.stderr, afresh.stderr)
    queued = Queue("express", connection=redis).job_ids
    assert queued == [shared.stdout.strip(), afresh.stdout.strip()]  # the third follows the first


def test_an_upload_over_the_servers_limit_gets_its_413_sentence(config, tmp_path):
    """3 MB against a cap of 100 kB: more than the sockets' buffers hold, so the server's refusal comes while
    the client is still sending, and must still reach the person."""
    process = start_api(port := free_port(), env={**os.environ, "MAX_UPLOAD_BYTES": "100000"})
    try:
        env = {**os.environ, "YTCAPTION_SERVER": f"http://127.0.0.1:{port}", "YTCAPTION_API_KEY": create_user()}
        (tmp_path / "long.mp3").write_bytes(os.urandom(3_000_000))
        result = transcribe(env, str(tmp_path / "long.mp3"))
    finally:
        stop_process(process)
    assert result.returncode == 1
    assert ("Error: " + str(tmp_path / "long.mp3") + ": upload_too_large: The upload is larger than 100,000 bytes"
            in result.stderr), result.stderr


def test_an_unknown_key_gets_the_servers_own_sentence(env, media_server):
    env = {**env, "YTCAPTION_API_KEY": "not-a-key"}
    code, _, text = http("POST", env["YTCAPTION_SERVER"] + "/api/v1/transcribe/async/submit",
                         {"Authorization": "Bearer not-a-key"}, {"youtube_url": media_server.url("fox.m4a")})
    assert code == 401
    result = transcribe(env, media_server.url("fox.m4a"))
    assert result.returncode == 1
    assert json.loads(text)["message"] in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


# --- without a server -----------------------------------------------------------------------------------


def test_a_missing_key_is_a_usage_error():
    env = {key: value for key, value in os.environ.items() if key != "YTCAPTION_API_KEY"}
    result = transcribe(env, "https://www.youtube.com/watch?v=jNQXAC9IVRw")
    assert result.returncode == 2
    assert "No API key: pass --key or set YTCAPTION_API_KEY" in result.stderr, result.stderr


def test_an_unreachable_server_is_one_sentence():
    env = {**os.environ, "YTCAPTION_SERVER": f"http://127.0.0.1:{free_port()}", "YTCAPTION_API_KEY": "key"}
    result = transcribe(env, "https://www.youtube.com/watch?v=jNQXAC9IVRw")
    assert result.returncode == 1
    assert "Cannot reach the ytcaption server at http://127.0.0.1:" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args, message", [
    (["no-such-file.mp3"], "'no-such-file.mp3' is neither an http(s) URL nor a file"),
    (["youtube.com/watch?v=jNQXAC9IVRw"], "(a URL starts with https://)"),
    (["https://youtu.be/jNQXAC9IVRw", "https://youtu.be/M7lc1UVf-VE", "-o", "pyproject.toml"],
     "with several inputs, -o names a directory"),
])
def test_inputs_and_output_that_cannot_be_used_are_usage_errors(args, message):
    env = {**os.environ, "YTCAPTION_SERVER": f"http://127.0.0.1:{free_port()}", "YTCAPTION_API_KEY": "key"}
    result = subprocess.run([ytcaption_command(), "transcribe", *args], env=env, capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == 2
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize("source, name", [
    ("https://www.youtube.com/watch?v=jNQXAC9IVRw&t=10", "jNQXAC9IVRw"),
    ("https://youtu.be/jNQXAC9IVRw", "jNQXAC9IVRw"),
    ("https://www.youtube.com/shorts/M7lc1UVf-VE", "M7lc1UVf-VE"),
    ("http://127.0.0.1:8080/media/fox.m4a?delay=0.05", "fox"),
    ("http://127.0.0.1:8080/talks/a%20talk%3F.webm", "a_talk"),
    ("http://127.0.0.1:8080/", "127.0.0.1"),
])
def test_a_transcript_is_named_for_the_video_id_or_the_last_path_part(source, name):
    assert [item.name for item in make_items([source])] == [name]


def test_names_are_a_files_stem_and_made_unique(tmp_path):
    shutil.copy(FIXTURES / "fox.m4a", tmp_path / "my talk.m4a")
    sources = [str(tmp_path / "my talk.m4a"), "http://127.0.0.1/my_talk.webm", "http://127.0.0.1/my_talk.webm"]
    assert [item.name for item in make_items(sources)] == ["my_talk", "my_talk-2", "my_talk-3"]
