"""Helpers for the poller tests: loopback API fakes replaying the real payload shapes."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

from werkzeug import Request, Response

SAAS = Path("saas-logs")


def json_response(body, status=200, headers=None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers or {}, content_type="application/json")


class PagedAPI:
    """Serves pages keyed by the paging parameter; injected faults are served first, once each.

    `pages` maps the token/cursor value of a request (None for the first page) to the page body; `faults` maps
    it to responses (or callables) to return before the page. `broken` tokens answer 500 forever.
    """

    def __init__(self, pages: dict, token_param: str, faults: dict | None = None, broken: set | None = None):
        self.pages = pages
        self.token_param = token_param
        self.faults = {k: list(v) for k, v in (faults or {}).items()}
        self.broken = broken or set()
        self.requests: list[dict] = []

    def __call__(self, request: Request) -> Response:
        args = request.args.to_dict(flat=True)
        self.requests.append({"args": args, "auth": request.headers.get("Authorization")})
        token = args.get(self.token_param) or None
        if token in self.broken:
            return json_response({"error": {"code": 500, "message": "backend error"}}, status=500)
        pending = self.faults.get(token)
        if pending:
            fault = pending.pop(0)
            return fault if isinstance(fault, Response) else fault(request)
        return json_response(self.pages[token])


class RecordingSleep:
    """Stands in for time.sleep in the retry policy: records the waits instead of sleeping."""

    def __init__(self):
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


ACCESS_TOKEN = "ya29.FAKE-access-token-3f9c1d"


class TokenEndpoint:
    """OAuth token endpoint of the fake Google: records the JWT assertions it was sent."""

    def __init__(self):
        self.claims: list[dict] = []
        self.fail_with: Response | None = None

    def __call__(self, request: Request) -> Response:
        assertion = request.form["assertion"]
        payload = assertion.split(".")[1]
        self.claims.append(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
        if self.fail_with is not None:
            return self.fail_with
        return json_response({"access_token": ACCESS_TOKEN, "expires_in": 3600, "token_type": "Bearer"})


def load_pages(peer_data: Path, *parts: str) -> list[dict]:
    folder = peer_data.joinpath(SAAS, *parts)
    return [json.loads(p.read_text()) for p in sorted(folder.glob("00*.json"))]


def chain(pages: list[dict], set_token: Callable[[dict, str | None], None], tokens: list[str]) -> dict:
    """Link pages so page i hands out tokens[i]; returns {request token: page}."""
    out, previous = {}, None
    for i, page in enumerate(pages):
        page = json.loads(json.dumps(page))
        set_token(page, tokens[i] if i < len(tokens) else None)
        out[previous] = page
        previous = tokens[i] if i < len(tokens) else None
    return out

