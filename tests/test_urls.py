import pytest

from app.core.errors import (
    ChannelNotSupported,
    HostNotAllowed,
    InvalidURL,
    PlaylistNotSupported,
)
from app.core.urls import parse_video_url

VIDEO = "dQw4w9WgXcQ"
CANONICAL = f"https://www.youtube.com/watch?v={VIDEO}"


@pytest.mark.parametrize("url", [
    f"https://www.youtube.com/watch?v={VIDEO}",
    f"http://youtube.com/watch?v={VIDEO}",
    f"https://www.youtube.com/watch?feature=share&v={VIDEO}&t=42s",
    f"https://www.youtube.com/watch?v={VIDEO}&list=PL590L5WQmH8fJ54F369BLDSqIwcs-TCfs",
    f"https://youtu.be/{VIDEO}",
    f"https://youtu.be/{VIDEO}?si=abc&t=10",
    f"https://www.youtube.com/shorts/{VIDEO}",
    f"https://www.youtube.com/embed/{VIDEO}?start=5",
    f"https://www.youtube.com/live/{VIDEO}",
    f"https://m.youtube.com/watch?v={VIDEO}",
    f"https://music.youtube.com/watch?v={VIDEO}&feature=share",
    f"https://www.youtube-nocookie.com/embed/{VIDEO}",
    f"  HTTPS://WWW.YOUTUBE.COM/watch?v={VIDEO}  ",
])
def test_youtube_url_forms_normalise_to_the_video_id(url):
    parsed = parse_video_url(url)
    assert (parsed.video_id, parsed.url) == (VIDEO, CANONICAL)


@pytest.mark.parametrize("url, error", [
    ("", InvalidURL),
    ("not a url", InvalidURL),
    ("ftp://youtube.com/watch?v=" + VIDEO, InvalidURL),
    ("file:///etc/passwd", InvalidURL),
    ("javascript:alert(1)", InvalidURL),
    ("https://user:secret@www.youtube.com/watch?v=" + VIDEO, InvalidURL),
    ("https://www.youtube.com:99999/watch?v=" + VIDEO, InvalidURL),
    ("https://www.youtube.com/watch?v=short", InvalidURL),
    ("https://www.youtube.com/watch", InvalidURL),
    ("https://www.youtube.com/", InvalidURL),
    ("https://youtu.be/", InvalidURL),
    ("https://www.youtube.com/" + "a" * 3000, InvalidURL),
    ("https://vimeo.com/123456", HostNotAllowed),
    ("https://youtube.com.evil.example/watch?v=" + VIDEO, HostNotAllowed),
    ("http://127.0.0.1/video.mp4", HostNotAllowed),
    ("https://www.youtube.com/playlist?list=PL590L5WQmH8fJ54F369BLDSqIwcs-TCfs", PlaylistNotSupported),
    ("https://www.youtube.com/watch?list=PL590L5WQmH8fJ54F369BLDSqIwcs-TCfs", PlaylistNotSupported),
    ("https://www.youtube.com/channel/UC38IQsAvIsxxjztdMZQtwHA", ChannelNotSupported),
    ("https://www.youtube.com/@veritasium", ChannelNotSupported),
    ("https://www.youtube.com/c/veritasium", ChannelNotSupported),
    ("https://www.youtube.com/user/someone", ChannelNotSupported),
])
def test_rejected_urls(url, error):
    with pytest.raises(error):
        parse_video_url(url)


def test_extra_hosts_are_allowed_and_kept_as_given():
    parsed = parse_video_url("http://127.0.0.1:8080/media/talk.webm#t=3", extra_hosts=["127.0.0.1:8080"])
    assert parsed.url == "http://127.0.0.1:8080/media/talk.webm"
    assert parsed.video_id is None


ALLOWED = ["media.example.com", "files.example.com:8080", "any.example.com:*", "[::1]:9000", "127.0.0.1:18090"]


@pytest.mark.parametrize("url, allowed", [
    ("http://media.example.com/a.mp3", True),  # a bare host: its default ports
    ("https://media.example.com/a.mp3", True),
    ("http://media.example.com:443/a.mp3", False),  # a default port, but not http's
    ("http://media.example.com:8080/a.mp3", False),
    ("http://files.example.com:8080/a.mp3", True),  # host:port: that port only
    ("http://files.example.com/a.mp3", False),
    ("https://files.example.com:8081/a.mp3", False),
    ("http://any.example.com:1234/a.mp3", True),  # host:*
    ("http://[::1]:9000/a.mp3", True),
    ("http://[::1]:9001/a.mp3", False),
    ("http://127.0.0.1:18090/a.mp3", True),  # written with a port, it allows that port
    ("http://127.0.0.1:6379/", False),  # ... and not Redis's
    ("http://127.0.0.1/", False),
])
def test_allowed_host_entries_name_their_ports(url, allowed):
    if allowed:
        assert parse_video_url(url, extra_hosts=ALLOWED).url == url
    else:
        with pytest.raises(HostNotAllowed):
            parse_video_url(url, extra_hosts=ALLOWED)
