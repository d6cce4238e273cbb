"""Errors the user causes (a wrong option, path or file), told apart from programming errors.

The command line (``python -m xmtc ...``, ``python -m xmtc.attack.mlm``) prints a user error as one
``error: ...`` line on stderr and exits with status 2; anything else keeps its full traceback.
``XMTC_TRACEBACK=1`` shows the full traceback (and jsonargparse's full message) for user errors too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

TRACEBACK_ENV = "XMTC_TRACEBACK"


class UserError(ValueError):
    """A value the user gave is wrong; the message names the option or file and says what to do."""


class UserTypeError(UserError, TypeError):
    """A user error that is also a ``TypeError`` (an object of the wrong kind linked from the config)."""


class ModelPathError(FileNotFoundError):
    """A model, tokenizer or encoder path that cannot be loaded; the message says how to make it."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    from xmtc.data.readers import DataFormatError

    return (UserError, DataFormatError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def user_error(exc: BaseException) -> BaseException | None:
    """The user error behind ``exc``: itself or an explicit cause (``raise ... from``), as jsonargparse wraps
    an error raised while it builds the model or data from the config; None for anything else."""
    kinds = _user_error_types()
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kinds):
            return current
        seen.add(id(current))
        current = current.__cause__
    return None


def show_tracebacks() -> bool:
    return os.environ.get(TRACEBACK_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def exit_on_user_error(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Run a command line entry point: a user error becomes ``error: <message>`` on stderr and status 2."""
    try:
        fn(*args, **kwargs)
    except Exception as exc:
        cause = user_error(exc)
        if cause is None or show_tracebacks():
            raise
        message = str(cause).strip() or type(cause).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0
