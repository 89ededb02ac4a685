"""The OpenAPI 3.0 description of the API, served at ``/openapi.json``."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("openapi", __name__)

_ERROR = {"$ref": "#/components/schemas/Error"}
_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _errors(*codes: int) -> dict:
    return {str(code): {"description": "Error", "content": {"application/json": {"schema": _ERROR}}}
            for code in codes}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


SPEC = {
    "openapi": "3.0.3",
    "info": {"title": "ytcaption", "version": "1", "description": "Transcribe YouTube videos with Whisper."},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {"type": "object", "required": ["error", "message"],
                      "properties": {"error": {"type": "string"}, "message": {"type": "string"}}},
            "SubmitRequest": {
                "type": "object", "required": ["youtube_url"], "additionalProperties": False,
                "properties": {"youtube_url": {"type": "string"}, "language": {"type": "string"},
                               "model": {"type": "string"}},
            },
            "Accepted": {"type": "object", "required": ["job_id", "status", "queue", "message", "status_url"],
                         "properties": {"job_id": {"type": "string"}, "status": {"type": "string"},
                                        "queue": {"type": "string"}, "message": {"type": "string"},
                                        "status_url": {"type": "string"}}},
            "Status": {"type": "object", "required": ["job_id", "status", "progress", "stage"],
                       "properties": {"job_id": {"type": "string"},
                                      "status": {"type": "string", "enum": ["pending", "processing", "completed",
                                                                            "failed", "cancelled"]},
                                      "progress": {"type": "integer", "minimum": 0, "maximum": 100},
                                      "stage": {"type": "string"}}},
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/api/v1/transcribe/async/submit": {"post": {
            "summary": "Submit a video for transcription",
            "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                            "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/SubmitRequest"}}}},
            "responses": {"202": _json({"$ref": "#/components/schemas/Accepted"}, "Accepted"),
                          **_errors(400, 401, 413, 422, 429, 503)},
        }},
        "/api/v1/transcribe/async/status/{job_id}": {"get": {
            "summary": "A job's status", "parameters": [_JOB_ID],
            "responses": {"200": _json({"$ref": "#/components/schemas/Status"}), **_errors(401, 404, 429, 503)},
        }},
        "/api/v1/transcribe/async/cancel/{job_id}": {"delete": {
            "summary": "Cancel a job", "parameters": [_JOB_ID],
            "responses": {"200": _json({"type": "object"}), "202": _json({"type": "object"}, "Stopping"),
                          **_errors(401, 404, 409, 429, 503)},
        }},
        "/api/v1/transcriptions/{transcription_id}": {"get": {
            "summary": "A transcript",
            "parameters": [{"name": "transcription_id", "in": "path", "required": True, "schema": {"type": "string"}},
                           {"name": "format", "in": "query", "required": False,
                            "schema": {"type": "string", "enum": ["json", "txt", "srt", "vtt"]}}],
            "responses": {"200": {"description": "The transcript", "content": {
                "application/json": {"schema": {"type": "object"}}, "text/plain": {"schema": {"type": "string"}},
                "application/x-subrip": {"schema": {"type": "string"}}, "text/vtt": {"schema": {"type": "string"}}}},
                **_errors(400, 401, 404, 429, 503)},
        }},
        "/api/v1/transcribe/async/batch": {"post": {
            "summary": "Submit several videos",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["videos"], "additionalProperties": False,
                "properties": {"videos": {"type": "array",
                                          "items": {"$ref": "#/components/schemas/SubmitRequest"}}}}}}},
            "responses": {"202": _json({"type": "object"}, "Accepted"), **_errors(400, 401, 413, 429, 503)},
        }},
        "/api/v1/transcribe/async/batch/{batch_id}": {
            "get": {"summary": "A batch's progress and each video's status",
                    "parameters": [{"name": "batch_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {"200": _json({"type": "object"}), **_errors(401, 404, 429, 503)}},
            "delete": {"summary": "Cancel a batch's videos that have not ended",
                       "parameters": [{"name": "batch_id", "in": "path", "required": True,
                                       "schema": {"type": "string"}}],
                       "responses": {"200": _json({"type": "object"}), **_errors(401, 404, 429, 503)}},
        },
        "/api/v1/me": {"get": {"summary": "The key's user, tier and usage",
                               "responses": {"200": _json({"type": "object"}), **_errors(401, 429, 503)}}},
        "/api/v1/admin/users": {"get": {"summary": "Every user with usage (admin)",
                                        "responses": {"200": _json({"type": "object"}),
                                                      **_errors(401, 403, 429, 503)}}},
        "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": _json({"type": "object"})}}},
        "/readyz": {"get": {"summary": "Readiness (Redis reachable)", "security": [],
                            "responses": {"200": _json({"type": "object"}), **_errors(503)}}},
    },
}


@bp.get("/openapi.json")
def openapi():
    return SPEC
