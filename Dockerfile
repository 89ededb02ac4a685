FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /srv/ytcaption

COPY pyproject.toml README.md ./
COPY app ./app
COPY workers ./workers
COPY scheduler ./scheduler
RUN pip install . && useradd --create-home ytcaption
USER ytcaption

ENV PORT=8000
EXPOSE 8000
CMD ["sh", "-c", "exec gunicorn --config python:app.gunicorn_conf --bind 0.0.0.0:${PORT} 'app:create_app()'"]
