"""The project's own errors: each says which file or setting is wrong and why.

The CLI prints these as one line; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


def user_errors() -> tuple[type[Exception], ...]:
    from autocolor.checkpoint import CheckpointError
    from autocolor.data import DatasetError
    from autocolor.train import TrainingError

    errors: list[type[Exception]] = [CheckpointError, DatasetError, TrainingError]
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
