"""OpenAI's error shape, so that existing OpenAI clients show our sentences as they show OpenAI's.

OpenAI answers `{"error": {"message", "type", "code", "param"}}` with a 4xx/5xx status; its Python
package raises the matching `BadRequestError`, `AuthenticationError`, `NotFoundError`, ... with the
message in it, which is where the one sentence that says what to do next ends up.
"""

from __future__ import annotations

# status -> OpenAI's error `type` for it
_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
          413: "invalid_request_error", 429: "rate_limit_error", 503: "server_error", 500: "server_error"}


class ApiError(Exception):
    """A request that cannot be answered: the HTTP status, one sentence, and a machine-readable code."""

    def __init__(self, status: int, message: str, code: str, *, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": _TYPES.get(self.status, "invalid_request_error"),
                          "code": self.code, "param": self.param}}

    def response(self):
        """As a FastAPI response (imported here: the app's client side shares this module's checks, not FastAPI)."""
        from fastapi.responses import JSONResponse

        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)
