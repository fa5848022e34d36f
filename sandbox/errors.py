"""Zoho's error bodies, as the documents give them.

CRM answers ``{"code", "details", "message", "status": "error"}`` (seeds 002/004);
Accounts answers ``{"error": ...}``; Bookings wraps everything in
``{"response": {"returnvalue": {...}, "status": "failure"}}``.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

#: Messages Zoho uses for its codes (where a document shows one).
MESSAGES = {
    "INVALID_TOKEN": "invalid oauth token",
    "OAUTH_SCOPE_MISMATCH": "invalid oauth scope to access this URL",
    "NO_PERMISSION": "permission denied",
    "INVALID_URL_PATTERN": "Please check if the URL trying to access is a correct one",
    "INVALID_MODULE": "the module name given seems to be invalid",
    "INVALID_REQUEST_METHOD": "The http request method type is not a valid one",
    "INTERNAL_ERROR": "Internal Server Error",
    "TOO_MANY_REQUESTS": "Too many requests. Please try again after some time.",
    "MANDATORY_NOT_FOUND": "required field not found",
    "INVALID_DATA": "invalid data",
    "LIMIT_EXCEEDED": "the number of records exceeds the limit",
    "REQUIRED_PARAM_MISSING": "One of the expected parameter is missing",
}


class CrmError(Exception):
    """A CRM error answered as ``{"code", "details", "message", "status": "error"}``."""

    def __init__(
        self,
        code: str,
        status_code: int = 400,
        message: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.code = code
        self.status_code = status_code
        self.message = message or MESSAGES.get(code, code.lower().replace("_", " "))
        self.details = details or {}
        self.headers = headers or {}
        super().__init__(f"{code}: {self.message}")

    def body(self) -> dict[str, Any]:
        """The JSON body Zoho sends for this error."""
        return {"code": self.code, "details": self.details, "message": self.message, "status": "error"}

    def response(self) -> JSONResponse:
        """The error as an HTTP response."""
        return JSONResponse(self.body(), status_code=self.status_code, headers=self.headers)


class BookingsError(Exception):
    """A Bookings failure: ``{"response": {"returnvalue": {"message": ...}, "status": "failure"}}``.

    Bookings reports business failures with HTTP 200 and ``status: failure``;
    authentication failures use HTTP 401 with the same envelope.
    """

    def __init__(self, message: str, status_code: int = 200, code: str | None = None) -> None:
        self.message = message
        self.status_code = status_code
        self.code = code
        super().__init__(message)

    def response(self) -> JSONResponse:
        """The failure as an HTTP response."""
        value: dict[str, Any] = {"message": self.message}
        if self.code:
            value["code"] = self.code
        return JSONResponse(
            {"response": {"returnvalue": value, "status": "failure"}}, status_code=self.status_code
        )


def record_error(code: str, message: str | None = None, **details: Any) -> dict[str, Any]:
    """One per-record entry of a ``data`` array (``status: error``)."""
    return {
        "code": code,
        "details": details,
        "message": message or MESSAGES.get(code, code.lower().replace("_", " ")),
        "status": "error",
    }
