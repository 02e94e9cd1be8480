"""Say why the user's code failed to import: the file, the line, the error, and the user's own frames."""

from __future__ import annotations

import traceback
from pathlib import Path

_OURS = str(Path(__file__).resolve().parent)  # frames of queuerun itself are noise to the user


def _user_frames(exc: BaseException) -> list[traceback.FrameSummary]:
    frames = traceback.extract_tb(exc.__traceback__)
    return [f for f in frames if not f.filename.startswith(_OURS) and "<frozen importlib" not in f.filename]


def describe(exc: BaseException) -> str:
    """``file:line: Error: message`` on the first line, then the traceback of the user's frames."""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f"{exc.filename}:{exc.lineno}"
        text = (exc.text or "").strip()
        return f"{where}: SyntaxError: {exc.msg}" + (f"\n    {text}" if text else "")
    frames = _user_frames(exc)
    head = f"{type(exc).__name__}: {exc}"
    if not frames:
        return head
    last = frames[-1]
    lines = "".join(traceback.format_list(frames)).rstrip()
    return f"{last.filename}:{last.lineno}: {head}\nTraceback (your code, most recent call last):\n{lines}"
