"""The OpenAPI document says what the API does: schemathesis sends requests made from it to the
API under gunicorn, over HTTP, and checks every answer (status, content type, body, headers,
authentication) against it."""

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app import create_app
from app.core.redis_server import RedisServer, free_port
from app.core.services import Services
from app.core.settings import Settings
from tests.helpers import start_api, stop_process


def served_document() -> dict:
    """The document as the API serves it; it depends on the routes and models only, not on Redis."""
    return create_app({"REDIS_URL": "redis://127.0.0.1:1/0"}).test_client().get("/openapi.json").get_json()


schema = schemathesis.openapi.from_dict(served_document())
# A body over 64 KiB is refused with 413, a rejection that schemathesis does not count as one by default.
_rejection = schema.config.checks.negative_data_rejection
_rejection.expected_statuses = [*_rejection.expected_statuses, "413"]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """gunicorn serving the API on its own Redis, and an admin's key (it may call every operation)."""
    redis = RedisServer(tmp_path_factory.mktemp("openapi-redis"), port=free_port(), persistent=False)
    redis.start()
    env = {**os.environ, "REDIS_URL": redis.url, "RATE_LIMIT_ENTERPRISE": "1000000", "METRICS_PUBLIC": "true"}
    services = Services.from_settings(Settings.load({"REDIS_URL": redis.url}))
    key = services.users.create("openapi@example.com", "enterprise", role="admin")[1]
    port = free_port()
    process = start_api(port, env)
    yield f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}
    stop_process(process)
    services.redis.close()
    redis.stop()


@schema.parametrize()
# The same examples on every run: what it finds is found on the developer's machine, not by chance in CI.
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_every_answer_conforms_to_the_openapi_document(case, api):
    base_url, headers = api
    # Every check but one: a schema-valid submit may still be refused, for rules JSON Schema cannot
    # say (the URL policy: which hosts, a YouTube video id; an English-only model with language "fr").
    case.call_and_validate(base_url=base_url, headers=headers, excluded_checks=[positive_data_acceptance])


def test_the_document_is_openapi_3_1_and_describes_every_route(client):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"] == "3.1.0"
    documented = {(path, method) for path, item in spec["paths"].items() for method in item}
    api_routes = {(rule.rule, method.lower()) for rule in client.application.url_map.iter_rules()
                  if rule.rule.startswith("/api/") for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert {(path.replace("{", "<").replace("}", ">"), method) for path, method in documented} >= api_routes
    submit = spec["components"]["schemas"]["SubmitBody"]
    assert submit["properties"]["youtube_url"]["minLength"] == 1 and submit["additionalProperties"] is False
    status = spec["components"]["schemas"]["JobStatus"]
    assert status["properties"]["created_at"]["anyOf"][0]["format"] == "date-time"
