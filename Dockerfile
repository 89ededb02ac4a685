FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /srv/ytcaption

# ffmpeg: yt-dlp hands it the streams it cannot download itself (HLS with keys, DASH to merge);
# `ytcaption doctor` warns without it.
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml README.md ./
COPY app ./app
COPY workers ./workers
COPY scheduler ./scheduler
# Optional extras, e.g. `--build-arg EXTRAS=youtube-pot` (docker-compose.yml passes YTCAPTION_EXTRAS). The
# dependencies bring yt-dlp's JavaScript runtime too: the `deno` wheel installs its binary into /usr/local/bin
# (it needs glibc 2.27+ and libgcc_s, both in this image), and the worker hands yt-dlp that path.
ARG EXTRAS=""
RUN pip install ".${EXTRAS:+[$EXTRAS]}" && useradd --create-home ytcaption
USER ytcaption

ENV PORT=8000
EXPOSE 8000
CMD ["sh", "-c", "exec gunicorn --config python:app.gunicorn_conf --bind 0.0.0.0:${PORT} 'app:create_app()'"]
