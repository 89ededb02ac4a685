"""yt-dlp as the worker configures it (workers/ytdlp.py): the JavaScript runtime and the EJS solver
YouTube needs, yt-dlp's extractor arguments, and the operator's cookie file, which no job changes."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest
from yt_dlp import YoutubeDL

from app.core.errors import ConfigurationError
from app.core.settings import Settings
from tests.helpers import YtdlpLines, status, submit, ytcaption_command
from workers import ytdlp


def verbose_ytdlp(settings: Settings, directory: Path, **given) -> tuple[YoutubeDL, YtdlpLines]:
    """A YoutubeDL with exactly the worker's options, made verbose so that it prints its debug header."""
    lines = YtdlpLines()
    options = ytdlp.ytdlp_options(settings, directory=directory, logger=lines, **given)
    options.update(verbose=True, quiet=False)
    return YoutubeDL(options), lines


def test_ytdlp_as_the_worker_configures_it_runs_the_ejs_solver_in_the_bundled_deno(tmp_path):
    import deno

    settings = Settings.load({"YTDLP_JS_RUNTIME": "deno"})
    assert ytdlp.js_runtime(settings) == ("deno", deno.find_deno_bin())
    ydl, log = verbose_ytdlp(settings, tmp_path)
    with ydl:
        header = [line for line in log.lines if "JS runtimes:" in line or "Optional libraries:" in line]
        print("\n".join(header))
        assert re.search(r"\[debug\] JS runtimes: deno-\d+\.\d+\.\d+$", header[-1]), header
        assert ydl._js_runtimes["deno"].info.path == deno.find_deno_bin()  # the path given, not a PATH lookup
        version = ytdlp.ejs_solver_version()
        assert version and f"yt_dlp_ejs-{version}" in header[0]

        # The YouTube extractor's challenge solver: available, with the scripts of the yt-dlp-ejs package...
        youtube = ydl.get_info_extractor("Youtube")
        youtube.initialize()
        providers = [line for line in log.lines if "JS Challenge Providers:" in line]
        assert providers and re.search(r"Providers: .*\bdeno\b(?! \(unavailable\))", providers[0]), providers
        solver = next(p for p in youtube._jsc_director.providers.values() if p.PROVIDER_NAME == "deno")
        assert solver.is_available()
        for script in (solver._lib_script, solver._core_script):
            assert (script.source.value, script.version) == ("python package", version), script
        # ...which Deno really runs: given a player that is not YouTube's, the solver's own code says so.
        from yt_dlp.extractor.youtube.jsc.provider import JsChallengeProviderError

        with pytest.raises(JsChallengeProviderError) as caught:
            solver._run_js_runtime(solver._construct_stdin("var notAPlayer = 1;", False, []))
    thrown = re.search(r'Uncaught \(in promise\) "([^"]+)"', str(caught.value))
    assert thrown and thrown.group(1) in solver._core_script.code, str(caught.value)


def test_another_runtime_is_given_to_ytdlp_by_its_path(tmp_path):
    import deno

    elsewhere = tmp_path / "bin" / "deno"
    elsewhere.parent.mkdir()
    elsewhere.symlink_to(deno.find_deno_bin())
    settings = Settings.load({"YTDLP_JS_RUNTIME": f"deno:{elsewhere}"})
    ydl, log = verbose_ytdlp(settings, tmp_path)
    with ydl:
        assert ydl._js_runtimes["deno"].info.path == str(elsewhere)
        assert any(re.search(r"JS runtimes: deno-\d", line) for line in log.lines)


def test_no_runtime_when_told_none(tmp_path):
    settings = Settings.load({"YTDLP_JS_RUNTIME": "none"})
    assert ytdlp.js_runtime(settings) is None
    ydl, log = verbose_ytdlp(settings, tmp_path)
    with ydl:
        assert "[debug] JS runtimes: none (disabled)" in log.lines


@pytest.mark.parametrize("value, words", [
    ("node:/nonexistent", "Setting YTDLP_JS_RUNTIME='node:/nonexistent' is invalid: '/nonexistent' is not an "
                          "executable file."),
    ("spidermonkey", "'spidermonkey' is not a JavaScript runtime yt-dlp can use; choose one of deno, node, bun, "
                     "quickjs"),
    ("quickjs:{tmp}/qjs", "'{tmp}/qjs' is not an executable file"),
])
def test_a_js_runtime_that_is_not_there_stops_start_up(value, words, tmp_path):
    (tmp_path / "qjs").write_text("not a program")
    value, words = value.replace("{tmp}", str(tmp_path)), words.replace("{tmp}", str(tmp_path))
    with pytest.raises(ConfigurationError) as caught:
        Settings.load({"YTDLP_JS_RUNTIME": value})
    assert words in caught.value.message


def test_the_worker_does_not_start_with_a_missing_js_runtime(config, monkeypatch):
    monkeypatch.setenv("YTDLP_JS_RUNTIME", "node:/nonexistent")
    result = subprocess.run([ytcaption_command(), "worker", "--burst"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "YTDLP_JS_RUNTIME='node:/nonexistent' is invalid: '/nonexistent' is not an executable file" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_jobs_youtubedl_has_the_extractors_ytdlp_chooses_itself_in_its_order(tmp_path):
    options = ytdlp.ytdlp_options(Settings.load(), directory=tmp_path)
    with YoutubeDL(dict(options)) as chosen_by_ytdlp, ytdlp.JobYoutubeDL(dict(options)) as ours:
        assert list(ours._ies.items()) == list(chosen_by_ytdlp._ies.items())
        assert list(ours._ies)[-1] == "Generic"  # the fallback, tried last


@pytest.mark.parametrize("url, extractor", [
    ("https://www.youtube.com/watch?v=jNQXAC9IVRw", "Youtube"),
    ("https://vimeo.com/76979871", "Vimeo"),  # an allowed host with an extractor of its own keeps it
    ("http://127.0.0.1:8000/lecture.webm", "Generic"),
])
def test_the_worker_chooses_the_extractor_ytdlp_would_for_the_jobs_url(tmp_path, url, extractor):
    ytdlp.choose_extractor(url)
    assert ytdlp.extractor_for(url) == extractor
    assert ytdlp.extractor_for("http://127.0.0.1:8000/another.webm") is None  # not chosen: yt-dlp searches
    with YoutubeDL({"quiet": True}) as plain:
        assert next(key for key, ie in plain._ies.items() if ie.suitable(url)) == extractor


def test_what_ytdlp_logs_names_a_proxy_without_its_password(tmp_path):
    """yt-dlp's debug header prints its options, the proxy's URL among them."""
    settings = Settings.load({"YTDLP_PROXIES": "http://ann:s3cret@127.0.0.1:3128"})
    ydl, log = verbose_ytdlp(settings, tmp_path, proxy=settings.proxies[0].url)
    with ydl:
        pass
    said = "\n".join(log.lines)
    assert "'proxy': 'http://127.0.0.1:3128'" in said
    assert "s3cret" not in said


# --- extractor arguments ------------------------------------------------------------------------


@pytest.mark.parametrize("value, parsed", [
    ("youtube:player_client=default,mweb;po_token=mweb.gvs+AbC123",
     {"youtube": {"player_client": ["default", "mweb"], "po_token": ["mweb.gvs+AbC123"]}}),
    ("youtube:player-client=tv  youtubepot-bgutilhttp:base_url=http://bgutil:4416",
     {"youtube": {"player_client": ["tv"]}, "youtubepot-bgutilhttp": {"base_url": ["http://bgutil:4416"]}}),
    ("YouTube:skip=dash,hls;lang=en\nyoutubetab:approximate_date",
     {"youtube": {"skip": ["dash", "hls"], "lang": ["en"]}, "youtubetab": {"approximate_date": [""]}}),
    ("generic:impersonate=chrome\\,firefox", {"generic": {"impersonate": ["chrome,firefox"]}}),
])
def test_extractor_args_are_parsed_as_ytdlps_command_line_does(value, parsed, tmp_path):
    settings = Settings.load({"YTDLP_EXTRACTOR_ARGS": value})
    assert ytdlp.extractor_args(settings) == parsed
    assert ytdlp.ytdlp_options(settings, directory=tmp_path)["extractor_args"] == parsed
    ytdlp.check(settings)


@pytest.mark.parametrize("value", ["player_client=web", "youtube player_client=web", ":x=1"])
def test_extractor_args_ytdlp_would_refuse_stop_the_worker(value):
    settings = Settings.load({"YTDLP_EXTRACTOR_ARGS": value})
    with pytest.raises(ConfigurationError) as caught:
        ytdlp.check(settings)
    assert caught.value.message.startswith("Setting YTDLP_EXTRACTOR_ARGS is invalid: ")
    assert "it should be IE_KEY:ARGS" in caught.value.message


def test_the_worker_does_not_start_with_extractor_args_ytdlp_refuses(config, monkeypatch):
    monkeypatch.setenv("YTDLP_EXTRACTOR_ARGS", "player_client=web")
    result = subprocess.run([ytcaption_command(), "worker", "--burst"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Setting YTDLP_EXTRACTOR_ARGS is invalid: wrong --extractor-args formatting" in result.stderr


# --- cookies --------------------------------------------------------------------------------------


def cookie_file(path: Path, header: str = "# Netscape HTTP Cookie File") -> Path:
    path.write_text(f"{header}\n# exported for the test\n\n"
                    "127.0.0.1\tFALSE\t/\tFALSE\t4102444800\tsession\tcookie-from-the-operator\n")
    return path


def test_the_job_sends_the_cookies_and_leaves_the_file_as_it_was(make_client, make_user, media_server, run_worker,
                                                                 tmp_path, settings):
    cookies = cookie_file(tmp_path / "cookies.txt")
    cookies.chmod(0o400)  # as an operator may keep it: read-only
    before = hashlib.sha256(cookies.read_bytes()).hexdigest(), cookies.stat().st_mtime_ns
    client = make_client(YTDLP_COOKIES_FILE=str(cookies))
    headers = make_user("pro")[1]
    job_id = submit(client, headers, media_server.url("fox.m4a", cookies="yes")).get_json()["job_id"]
    run_worker()
    assert status(client, headers, job_id)["status"] == "completed"
    sent = media_server.headers_for("cookies=yes", "Cookie")
    assert sent and all(cookie == "session=cookie-from-the-operator" for cookie in sent), sent
    assert (hashlib.sha256(cookies.read_bytes()).hexdigest(), cookies.stat().st_mtime_ns) == before
    assert not list(Path(settings.work_dir).rglob("cookies.txt")), "the job's copy outlived the job"


@pytest.mark.parametrize("header", ["# Netscape HTTP Cookie File", "# HTTP Cookie File", "\ufeff# HTTP Cookie File"])
def test_a_netscape_cookie_file_is_accepted(tmp_path, header):
    path = cookie_file(tmp_path / "cookies.txt", header)
    assert Settings.load({"YTDLP_COOKIES_FILE": str(path)}).ytdlp_cookies_file == path.resolve()


@pytest.mark.parametrize("content, words", [
    (None, "cannot read it (No such file or directory)"),
    ('[{"domain": ".youtube.com", "name": "SID"}]', "it is not a Netscape cookie file"),
    ("", "it is not a Netscape cookie file"),
])
def test_a_cookie_file_that_is_missing_or_not_netscape_stops_start_up(tmp_path, content, words):
    path = tmp_path / "cookies.txt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigurationError) as caught:
        Settings.load({"YTDLP_COOKIES_FILE": str(path)})
    assert caught.value.message.startswith(f"Setting YTDLP_COOKIES_FILE='{path}' is invalid: ")
    assert words in caught.value.message


def test_each_job_gets_its_own_copy_of_the_cookies(tmp_path):
    path = cookie_file(tmp_path / "cookies.txt")
    settings = Settings.load({"YTDLP_COOKIES_FILE": str(path)})
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    copy = ytdlp.job_cookie_file(settings, job_dir)
    assert copy == job_dir / "cookies.txt" and copy.read_bytes() == path.read_bytes()
    assert copy.stat().st_mode & 0o777 == 0o600
    assert ytdlp.ytdlp_options(settings, directory=job_dir, cookie_file=copy)["cookiefile"] == str(copy)
