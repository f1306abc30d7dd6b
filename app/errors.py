"""The one error type a user may see.

Everything that can go wrong because of the user's input or machine (a missing file, a broken model
folder, silent audio) is raised as `UserError` with a sentence that says what happened and what to do
next. The CLI prints it on one line; the GUI shows it; the worker sends it as an `error` frame. Any
other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An error whose message is a complete sentence meant for the user."""

    def __init__(self, message: str, *, code: str = "user_error") -> None:
        super().__init__(message)
        self.code = code

    @property
    def message(self) -> str:
        return str(self)


def first_line(exc: BaseException) -> str:
    """The first line of a library's exception, to quote inside a one-sentence UserError."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
