"""The project's own errors: each says which file or setting is wrong and why.

The CLI prints these as one line; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


def printable(text: str) -> str:
    r"""``text`` safe to print as one line on a terminal or in a log: control
    characters (escape sequences, newlines) and undecodable bytes of file
    names are shown as ``\xNN`` / ``\uNNNN`` escapes instead of acting.

    >>> printable("a\x1b]0;pwned\x07\nb.png")
    'a\\x1b]0;pwned\\x07\\nb.png'
    """
    out = []
    for ch in str(text):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte of a file name that is not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        else:
            out.append(repr(ch)[1:-1] if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


class SetupError(RuntimeError):
    """What this machine lacks for a request (a GPU, an extra), with what to do instead."""


def user_errors() -> tuple[type[Exception], ...]:
    from autocolor.checkpoint import CheckpointError
    from autocolor.data import DatasetError
    from autocolor.guide import HintError
    from autocolor.train import TrainingError

    errors: list[type[Exception]] = [CheckpointError, DatasetError, TrainingError, SetupError, HintError]
    try:
        from autocolor.imageio import ImageError

        errors.append(ImageError)
    except ImportError:
        pass
    try:
        from autocolor.photos import PhotoCorpusError

        errors.append(PhotoCorpusError)
    except ImportError:
        pass
    return tuple(errors)
