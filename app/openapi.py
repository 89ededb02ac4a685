"""The OpenAPI 3.1 document at ``/openapi.json``, made from the routes and the pydantic models.

Each view says what it takes and answers with ``@operation(...)``; the paths come from Flask's URL
map and the schemas from ``app.core.schemas`` (the models that validate the requests and shape
the answers), so the document cannot drift from the API. A test runs schemathesis against it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Flask, current_app
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.core import schemas

bp = Blueprint("openapi", __name__)

#: The errors every authenticated operation may answer: no or a bad key, the rate limit, Redis down.
AUTH_ERRORS = (401, 429, 503)
#: And every operation that reads a JSON body: a bad one, or one over the size limit.
BODY_ERRORS = (400, 413)
_ERROR_TEXT = {400: "Bad request", 401: "No valid API key", 403: "Not an admin", 404: "Not found (or not yours)",
               409: "Conflict", 413: "Body too large", 422: "Idempotency-Key reused", 429: "Too many requests",
               503: "Redis unreachable; retry after Retry-After seconds"}


@dataclass(frozen=True)
class Parameter:
    name: str
    where: str  # "query" or "header"
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True)
class Operation:
    summary: str
    #: status -> the model of the answer, or {media type: model or str (a text body)}
    responses: dict[int, type[BaseModel] | dict[str, type[BaseModel] | type[str]]]
    body: type[BaseModel] | None = None
    #: The fields that may come with a ``file`` instead of ``body``, as ``multipart/form-data``.
    upload: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    parameters: tuple[Parameter, ...] = ()
    authenticated: bool = True
    #: status -> what an error means here, where it is not what it means everywhere (``_ERROR_TEXT``)
    error_text: dict[int, str] = field(default_factory=dict)


def operation(summary: str, responses: dict, *, body: type[BaseModel] | None = None,
              upload: type[BaseModel] | None = None, errors: tuple[int, ...] = (),
              parameters: tuple[Parameter, ...] = (), authenticated: bool = True,
              error_text: dict[int, str] | None = None) -> Callable:
    """Describe a view for the OpenAPI document (its docstring becomes the description)."""

    def describe(view: Callable) -> Callable:
        view.openapi = Operation(summary, responses, body, upload, errors, parameters, authenticated,
                                 error_text or {})
        return view

    return describe


def build(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of ``app``'s documented routes."""
    operations = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule):
        view = app.view_functions[rule.endpoint]
        if isinstance(getattr(view, "openapi", None), Operation):
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                operations.append((rule, method.lower(), view))

    answers, bodies = {schemas.Error}, set()
    for _, _, view in operations:
        spec: Operation = view.openapi
        answers.update(model for answer in spec.responses.values() for model in _models(answer))
        bodies.update(model for model in (spec.body, spec.upload) if model)
    # Request bodies as pydantic validates them, answers as it writes them.
    modes = [(model, "validation") for model in bodies] + [(model, "serialization") for model in answers]
    _, definitions = models_json_schema(sorted(modes, key=lambda pair: pair[0].__name__),
                                        ref_template="#/components/schemas/{model}")

    components = definitions.get("$defs", {})
    # The models this server offers are settings, not part of the model: say which they are.
    offered = sorted(app.extensions["ytcaption"].settings.allowed_models)
    components["SubmitBody"]["properties"]["model"]["anyOf"][0]["enum"] = offered

    paths: dict[str, dict[str, Any]] = {}
    for rule, method, view in operations:
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        paths.setdefault(path, {})[method] = _operation(view, rule.arguments, components)
    return {
        "openapi": "3.1.0",
        "info": {"title": "ytcaption", "version": "1",
                 "description": "Transcribe YouTube videos with Whisper: submit, poll, fetch the transcript."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                       "schemas": components},
        "security": [{"bearer": []}],
        "paths": paths,
    }


def _operation(view: Callable, arguments: set[str], components: dict[str, Any]) -> dict[str, Any]:
    spec: Operation = view.openapi
    document: dict[str, Any] = {"summary": spec.summary, "operationId": view.__name__}
    if view.__doc__:
        document["description"] = view.__doc__.strip()
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                  for name in sorted(arguments)]
    parameters += [{"name": p.name, "in": p.where, "required": False, "description": p.description,
                    "schema": p.schema} for p in spec.parameters]
    if parameters:
        document["parameters"] = parameters
    if spec.body is not None:
        document["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(spec.body)}}}
    if spec.upload is not None:
        # The form's fields, and the file (binary).
        form = components[spec.upload.__name__]
        document["requestBody"]["content"]["multipart/form-data"] = {"schema": {
            **form, "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary"}, **form["properties"]}}}
    responses = {str(status): _response(answer) for status, answer in spec.responses.items()}
    errors = set(spec.errors) | (set(AUTH_ERRORS) if spec.authenticated else set())
    if spec.body is not None:
        errors |= set(BODY_ERRORS)
    for status in sorted(errors):
        responses[str(status)] = {"description": spec.error_text.get(status, _ERROR_TEXT[status]),
                                  "content": {"application/json": {"schema": _ref(schemas.Error)}}}
    document["responses"] = responses
    if not spec.authenticated:
        document["security"] = []
    return document


def _response(answer) -> dict[str, Any]:
    content = answer if isinstance(answer, dict) else {"application/json": answer}
    return {"description": "OK", "content": {
        media: {"schema": {"type": "string"} if model is str else _ref(model)} for media, model in content.items()}}


def _models(answer) -> list[type[BaseModel]]:
    content = answer if isinstance(answer, dict) else {"application/json": answer}
    return [model for model in content.values() if model is not str]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3.1 description of the API."""
    return build(current_app)
