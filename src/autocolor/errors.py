"""The project's own errors, and the exit codes the CLI returns.

Every error a user can fix derives from :class:`AutocolorError` and says, in
one line, which file or setting is wrong and what to do instead. The CLI
prints these as ``error: ...`` and exits with :data:`EXIT_USER_ERROR`;
anything else is a bug and keeps its traceback.

The subclasses live beside the code that raises them:
``checkpoint.CheckpointError``, ``data.DatasetError``, ``train.TrainingError``,
``photos.PhotoCorpusError``, ``evaluate.EvaluationError``,
``imageio.ImageError`` and ``guide.HintError``. Each also keeps the builtin
base it had before (``RuntimeError`` or ``ValueError``), so code that catches
those, such as the batch colorizer's per-file ``except ValueError``, still
catches them.

Exit codes of the ``autocolor`` command:

====  ==============================================================
 0    done: every input was handled
 1    some files failed (each named on stderr); the others were written
 2    user error: bad arguments, a missing or broken file or model folder
====  ==============================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USER_ERROR = 2


class AutocolorError(Exception):
    """Base of every error a user can fix; its message names the file or setting and the fix."""


class SetupError(AutocolorError, RuntimeError):
    """What this machine lacks for a request (a GPU, an extra), with what to do instead."""


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
