"""``POST /api/agent/run``: the unversioned route, an alias of ``POST /api/v1/agent/run`` that
negotiates both ways. A ``text/plain`` body (or one with no Content-Type) is the input itself,
with ``mode``, ``profile`` and ``on_disconnect`` as query parameters; a JSON body is a run request,
as on the v1 route. ``Accept: text/event-stream`` streams the run as SSE (like ``/run/stream``);
anything else gets the JSON result.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from starlette.responses import JSONResponse, Response

from agentstage.core import strict_json
from agentstage.core.tools import validation_details
from agentstage.errors import InvalidInputError
from agentstage.interfaces.http.deps import owner_tenant, request_id, runtime
from agentstage.interfaces.http.problems import problem
from agentstage.interfaces.http.routes import problems
from agentstage.interfaces.http.routes.runs import SSE_RESPONSE
from agentstage.interfaces.http.schemas import RunBody, RunResult
from agentstage.interfaces.http.sse import event_stream
from agentstage.interfaces.http.strict_body import StrictJSONRoute

router = APIRouter(prefix="/api/agent", tags=["runs"], route_class=StrictJSONRoute)
SSE = "text/event-stream"

ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "content": SSE_RESPONSE[200]["content"],
        "description": "The run's result as JSON, or its events as SSE with `Accept: text/event-stream`.",
    }
}
REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/RunBody"}},
        "text/plain": {
            "schema": {"type": "string", "description": "The input itself (UTF-8 unless a charset is given)."}
        },
    },
}


def media_ranges(accept: str) -> list[tuple[str, float]]:
    """``Accept`` as (media range, quality) pairs; a malformed quality counts as 0."""
    ranges = []
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media:
            ranges.append((media.lower(), quality))
    return ranges


def preferred(accept: str | None) -> Literal["json", "sse"] | None:
    """What the client asked for: SSE only when preferred over JSON; None when neither will do."""
    if not accept or not accept.strip():
        return "json"
    ranges = media_ranges(accept)

    def quality(*matches: str) -> float:
        return max((q for media, q in ranges if media in matches), default=0.0)

    json_q = quality("application/json", "application/*", "*/*")
    sse_q = quality(SSE, "text/*", "*/*")
    if json_q <= 0 and sse_q <= 0:
        return None
    return "sse" if sse_q > json_q else "json"


def _json_body(raw: bytes, query: dict[str, str | None]) -> RunBody:
    given = [name for name, value in query.items() if value is not None]
    if given:
        raise InvalidInputError(
            f"with a JSON body, give {', '.join(given)} in the body, not in the query",
            code="invalid_request",
            details={"errors": [{"field": name, "message": "belongs in the JSON body"} for name in given]},
        )
    try:
        data = strict_json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidInputError(f"the body is not valid JSON: {error}", code="malformed_json") from None
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"a JSON body must be a run request object, got {type(data).__name__}", code="invalid_request"
        )
    try:
        return RunBody.model_validate(data)
    except ValidationError as error:
        details = validation_details(error)
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        raise InvalidInputError(
            f"invalid request: {summary}", code="invalid_request", details={"errors": details}
        ) from None


def _text_body(raw: bytes, charset: str, query: dict[str, str | None]) -> RunBody:
    try:
        text = raw.decode(charset)
    except (LookupError, UnicodeDecodeError):
        raise InvalidInputError(f"the body is not valid {charset!r} text", code="invalid_input") from None
    return RunBody.model_validate(
        {"input": text, **{name: value for name, value in query.items() if value is not None}}
    )


def _content_type(request: Request) -> tuple[str, str]:
    header = request.headers.get("content-type", "")
    media, *params = (piece.strip() for piece in header.split(";"))
    charset = "utf-8"
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')
    return media.lower(), charset


@router.post(
    "/run",
    response_model=RunResult,
    responses={**ANSWERS, **problems(400, 401, 404, 406, 413, 415, 422, 429)},
    openapi_extra={"requestBody": REQUEST_BODY},
)
async def run(
    request: Request,
    mode: Annotated[str | None, Query(description="With a text body: auto, chat, react or planner.")] = None,
    profile: Annotated[str | None, Query(description="With a text body: the model profile.")] = None,
    on_disconnect: Annotated[
        Literal["continue", "cancel"] | None,
        Query(description="With a text body: what a streamed run does when its client goes away."),
    ] = None,
) -> Response:
    """Run the agent: the input as `text/plain` or a JSON run request; the answer as JSON (the shape
    of `agent run --output json`) or, with `Accept: text/event-stream`, the run's events as SSE.
    An alias of `POST /api/v1/agent/run` and `/run/stream`."""
    wanted = preferred(request.headers.get("accept"))
    if wanted is None:
        return problem(
            406, "not_acceptable", f"this route answers application/json or {SSE}, not {request.headers['accept']!r}",
            instance=request.url.path, request_id=request_id(request), headers={"Vary": "Accept"},
        )  # fmt: skip
    media, charset = _content_type(request)
    raw = await request.body()
    query = {"mode": mode, "profile": profile, "on_disconnect": on_disconnect}
    if media == "application/json" or media.endswith("+json"):
        body = _json_body(raw, query)
    elif media in ("", "text/plain"):
        body = _text_body(raw, charset, query)
    else:
        return problem(
            415, "unsupported_media_type",
            f"send the input as text/plain or a run request as application/json, not {media!r} "
            "(with curl: -H 'Content-Type: text/plain')",
            instance=request.url.path, request_id=request_id(request),
        )  # fmt: skip
    rt = runtime(request)
    run_request = body.to_request(request_id(request)).model_copy(update={"tenant": owner_tenant(request)})
    record = await rt.runs.start(run_request)
    if wanted == "sse":
        response: Response = event_stream(rt, record.id, cancel_on_disconnect=body.on_disconnect == "cancel")
    else:
        result = RunResult.model_validate((await rt.runs.wait(record.id)).result())
        response = JSONResponse(result.model_dump(mode="json"))  # exactly the v1 route's body
    response.headers["Vary"] = "Accept"
    return response
