"""The runtime's Status as Python exceptions.

Every binding call returns None or (code, message); `check` raises
RingattnError (a RuntimeError) with the runtime's message and its code, or
RingattnValueError (also a ValueError) for a bad or disagreeing value.
"""


class RingattnError(RuntimeError):
    """An error of the ringattn runtime. `code` is its StatusCode value, `code_name` its name."""

    def __init__(self, message, code=8, code_name="kInternal"):
        super().__init__(message)
        self.code = code
        self.code_name = code_name


class RingattnValueError(RingattnError, ValueError):
    """A value outside what is allowed (kInvalidArgument), or ranks that disagree on one (kMismatch)."""


class RingattnTypeError(RingattnError, TypeError):
    """A tensor of the wrong type or dtype (checked before any communication)."""


def error_from_status(status):
    from . import _C

    code, message = status
    cls = RingattnValueError if code in (_C.STATUS_INVALID_ARGUMENT, _C.STATUS_MISMATCH) else RingattnError
    return cls(message, code, _C.status_code_name(code))


def check(status):
    """Raise the exception of a binding call's result, if it is an error."""
    if status is not None:
        raise error_from_status(status)
