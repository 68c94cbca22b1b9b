"""Weights and training state on disk: safetensors plus JSON, written atomically.

A model folder holds ``model.safetensors``, ``config.json`` (the registry
name and keyword arguments that rebuild the model) and, for chroma models,
``decoding.json`` (how its output becomes ab: :class:`autocolor.quantize.Decoding`). A training checkpoint
adds ``optimizer.safetensors`` (Adam moments and RNG states as plain tensors)
and ``state.json`` (step, epoch, config). Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import tempfile
import typing
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from autocolor.atomic import atomic_write_bytes, default_file_mode, default_folder_mode, fsync_file, fsync_folder
from autocolor.errors import AutocolorError
from autocolor.models import (  # the factories' signatures are the config schema
    available_models,
    create_model,
    model_factory,
)
from autocolor.quantize import Decoding

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
DECODING_NAME = "decoding.json"
# Folders written before decoding had its own file kept these among the model's kwargs.
_LEGACY_DECODING_KWARGS = ("temperature", "chroma_scale", "prior_correction")
OPTIMIZER_NAME = "optimizer.safetensors"
AUX_NAME = "aux.safetensors"  # other modules a run trains beside the model (a GAN's discriminator)
STATE_NAME = "state.json"


class CheckpointError(AutocolorError, RuntimeError):
    """A checkpoint that cannot be used, with the file and the reason."""


def model_config(model: nn.Module, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"model": model.registry_name, "kwargs": model.registry_kwargs, **(extra or {})}


def _model_file_names(model: nn.Module) -> tuple[str, ...]:
    return (WEIGHTS_NAME, CONFIG_NAME, DECODING_NAME) if model.predicts == "ab" else (WEIGHTS_NAME, CONFIG_NAME)


def _write_model_files(model: nn.Module, folder: Path, extra: dict[str, Any] | None) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS_NAME))
    (folder / CONFIG_NAME).write_text(json.dumps(model_config(model, extra), indent=2))
    if model.predicts == "ab":
        (folder / DECODING_NAME).write_text(json.dumps(model.decoding.to_dict(), indent=2))
    for name in _model_file_names(model):
        os.chmod(folder / name, default_file_mode())  # files made inside a temporary folder may be 0600


def save_model(model: nn.Module, folder: Path, extra: dict[str, Any] | None = None) -> None:
    """Write the model folder's files into ``folder`` atomically (file by file)."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".save-") as tmp:
        _write_model_files(model, Path(tmp), extra)
        for name in _model_file_names(model):
            fsync_file(Path(tmp) / name)
            os.replace(Path(tmp) / name, folder / name)
    fsync_folder(folder)


def save_decoding(folder: Path, decoding: Decoding) -> None:
    """Write ``decoding.json`` into a model folder (atomically), leaving the weights alone."""
    read_config(folder)  # it must be a model folder
    atomic_write_bytes(Path(folder) / DECODING_NAME, json.dumps(decoding.to_dict(), indent=2).encode())


MAX_JSON_BYTES = 1_000_000  # a model folder's JSON is a few hundred bytes; a training config a few kB
MAX_WEIGHTS_BYTES = 4_000_000_000  # chroma-unet's widest (width 512) is about 1.3 GB


def _check_regular_file(path: Path, info: os.stat_result, limit: int) -> None:
    """Only regular files of at most ``limit`` bytes are read (a FIFO would hang, /dev/zero never end)."""
    if stat.S_ISDIR(info.st_mode):
        raise CheckpointError(f"{path}: is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise CheckpointError(f"{path}: not a regular file (a device, FIFO or socket); refusing to read it")
    if info.st_size > limit:
        raise CheckpointError(f"{path}: {info.st_size:,} bytes, over the limit of {limit:,} for this file")


def _read_regular(path: Path, limit: int) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes.

    Opened without blocking and checked on the open handle, so a FIFO does
    not hang and a link to ``/dev/zero`` is not read until memory runs out.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        _check_regular_file(path, os.fstat(fd), limit)
        with os.fdopen(fd, "rb") as f:
            fd = None
            data = f.read(limit + 1)
    finally:
        if fd is not None:
            os.close(fd)
    if len(data) > limit:
        raise CheckpointError(f"{path}: over the limit of {limit:,} bytes for this file")
    return data


def _read_json(path: Path) -> Any:
    data = _read_regular(path, MAX_JSON_BYTES)
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise CheckpointError(f"{path}: JSON nested too deep") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    except ValueError as exc:  # NaN or Infinity
        raise CheckpointError(f"{path}: {exc}") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def read_decoding(folder: Path, config: dict[str, Any]) -> Decoding:
    """The folder's decoding: ``decoding.json``, else the settings older folders
    kept in ``config.json``'s kwargs, else the defaults."""
    path = Path(folder) / DECODING_NAME
    try:
        if path.exists() or path.is_symlink():
            settings = _read_json(path)
            if not isinstance(settings, dict):
                raise CheckpointError(f"{path}: expected an object of decoding settings, got {type(settings).__name__}")
        else:
            settings = {k: v for k, v in config.get("kwargs", {}).items() if k in _LEGACY_DECODING_KWARGS}
        return Decoding.from_dict(settings)
    except (TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: bad decoding settings ({exc})") from exc


def read_config(folder: Path) -> dict[str, Any]:
    """``config.json`` checked against the schema before anything is built:
    a registered ``model`` name and ``kwargs`` that its factory takes, of
    the types it declares (the factory checks their bounds)."""
    path = Path(folder) / CONFIG_NAME
    if Path(folder).is_file():
        raise CheckpointError(f"{folder}: a file, not a model folder (a folder with {WEIGHTS_NAME} and {CONFIG_NAME})")
    try:
        config = _read_json(path)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: missing (a model folder holds {WEIGHTS_NAME} and {CONFIG_NAME})") from exc
    if not isinstance(config, dict) or "model" not in config:
        raise CheckpointError(f"{path}: no 'model' entry")
    name, kwargs = config["model"], config.get("kwargs", {})
    if not isinstance(name, str) or name not in available_models():
        known = ", ".join(available_models())
        raise CheckpointError(f"{path}: 'model' is {name!r}, not a registered model ({known})")
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{path}: 'kwargs' must be an object of keyword arguments, got {type(kwargs).__name__}")
    hints = typing.get_type_hints(model_factory(name))
    for key, value in kwargs.items():
        if key in _LEGACY_DECODING_KWARGS:
            continue
        if key not in hints or key == "return":
            takes = ", ".join(k for k in hints if k != "return") or "none"
            raise CheckpointError(f"{path}: {name} takes no argument {key!r} (it takes: {takes})")
        if not _fits_type(value, hints[key]):
            raise CheckpointError(f"{path}: {name} argument {key}={value!r} is not of type {_type_name(hints[key])}")
    return config


def _fits_type(value: Any, kind: Any) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind is str:
        return isinstance(value, str)
    return False  # factories take plain scalars; anything else is not a model folder we wrote


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", str(kind))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: missing") from exc
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    _check_regular_file(path, info, MAX_WEIGHTS_BYTES)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _check_weights(path: Path, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Every tensor the model expects, of its shape and kind, finite: one line otherwise
    (``load_state_dict`` would list every mismatch over a hundred lines)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing and missing != ["class_weights"]:  # folders saved before class weights were stored
        raise CheckpointError(f"{path}: weights do not fit {model.registry_name}: {len(missing)} tensors missing "
                              f"(e.g. {missing[0]}); is this the model named in {CONFIG_NAME}?")
    if unexpected:
        raise CheckpointError(f"{path}: weights do not fit {model.registry_name}: {len(unexpected)} unexpected "
                              f"tensors (e.g. {unexpected[0]})")
    wrong = [k for k in state if state[k].shape != expected[k].shape]
    if wrong:
        k = wrong[0]
        raise CheckpointError(f"{path}: weights do not fit {model.registry_name} with its {CONFIG_NAME} kwargs: "
                              f"{len(wrong)} tensors of another shape (e.g. {k}: {tuple(state[k].shape)} in the file, "
                              f"{tuple(expected[k].shape)} expected)")
    for k, tensor in state.items():
        want = expected[k].dtype
        if tensor.dtype.is_floating_point != want.is_floating_point or (tensor.dtype == torch.bool) != (want == torch.bool):
            raise CheckpointError(f"{path}: tensor {k} is {str(tensor.dtype).removeprefix('torch.')}, "
                                  f"expected {str(want).removeprefix('torch.')}")
        if tensor.dtype.is_floating_point and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: tensor {k} holds NaN or infinite values (a diverged training run?)")
    weights = state.get("class_weights")
    if weights is not None and not bool((weights > 0).all()):
        raise CheckpointError(f"{path}: class_weights must all be positive (decoding divides by them)")


def load_model(folder: Path, **overrides: Any) -> nn.Module:
    """Rebuild a model from a model folder (or a path to its safetensors file).

    Raises:
        CheckpointError: one line naming the file and what is wrong with it,
            whatever the folder holds.
    """
    folder = Path(folder)
    if folder.suffix == ".safetensors":
        folder = folder.parent
    config = read_config(folder)
    kwargs = {k: v for k, v in config.get("kwargs", {}).items() if k not in _LEGACY_DECODING_KWARGS}
    try:
        model = create_model(config["model"], **{**kwargs, **overrides})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder / CONFIG_NAME}: cannot build model ({exc})") from exc
    state = read_weights(folder / WEIGHTS_NAME)
    _check_weights(folder / WEIGHTS_NAME, model, state)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{folder / WEIGHTS_NAME}: weights do not fit {config['model']} ({_first_line(exc)})") from exc
    if model.predicts == "ab":
        model.decoding = read_decoding(folder, config)
    return model


# ---------------------------------------------------------------- training checkpoints


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            name = f"state.{pid}.{key}"
            if torch.is_tensor(value):
                tensors[name] = value.detach().cpu().contiguous()
            else:
                scalars[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith("state."):
            continue
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_training_checkpoint(
    folder: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    rng: dict[str, torch.Tensor],
    keep: int = 2,
    aux: dict[str, nn.Module | torch.optim.Optimizer] | None = None,
) -> Path:
    """Write ``folder/checkpoints/step-NNNNNNN`` whole or not at all, then point
    ``folder/checkpoints/latest`` at it and drop all but the ``keep`` newest.

    ``aux`` names further modules and optimizers to save (in ``aux.safetensors``),
    restored by :func:`load_training_checkpoint` given the same names.
    """
    root = folder / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".partial-*"):  # left by a run killed while saving
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step-{state['step']:09d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".partial-"))
    try:
        os.chmod(tmp, default_folder_mode())  # mkdtemp makes 0700
        _write_model_files(model, tmp, {"train": state.get("config")})
        tensors, meta = _optimizer_tensors(optimizer)
        tensors.update({f"rng.{k}": v for k, v in rng.items()})
        save_file(tensors, str(tmp / OPTIMIZER_NAME))
        aux_meta = {}
        if aux:
            aux_tensors, aux_meta = _aux_tensors(aux)
            save_file(aux_tensors, str(tmp / AUX_NAME))
        (tmp / STATE_NAME).write_text(json.dumps({**state, "optimizer": meta, "aux": aux_meta}, indent=1))
        for f in tmp.iterdir():
            fsync_file(f)
        if final.exists():
            _discard(final)
        os.replace(tmp, final)
        fsync_folder(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_bytes(root / "latest", final.name.encode())
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        _discard(old)
    return final


def _aux_tensors(aux: dict[str, nn.Module | torch.optim.Optimizer]) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    for name, obj in aux.items():
        if isinstance(obj, torch.optim.Optimizer):
            opt_tensors, meta[name] = _optimizer_tensors(obj)
            tensors.update({f"{name}.{k}": v for k, v in opt_tensors.items()})
        else:
            tensors.update({f"{name}.{k}": v.detach().cpu().contiguous() for k, v in obj.state_dict().items()})
    return tensors, meta


def _restore_aux(aux: dict[str, nn.Module | torch.optim.Optimizer], tensors: dict[str, torch.Tensor], meta: dict):
    for name, obj in aux.items():
        prefix = f"{name}."
        own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if isinstance(obj, torch.optim.Optimizer):
            _restore_optimizer(obj, own, meta[name])
        else:
            obj.load_state_dict(own)


def _discard(folder: Path) -> None:
    """Delete a checkpoint folder so that a kill mid-way leaves no half folder
    under a checkpoint's name: rename it out of sight first (atomic), then delete."""
    hidden = folder.with_name(f".partial-discard-{folder.name}")
    os.replace(folder, hidden)
    shutil.rmtree(hidden, ignore_errors=True)


def checkpoint_candidates(folder: Path) -> list[Path]:
    """Checkpoints of a run, the one ``latest`` names first, then newest first."""
    root = folder / "checkpoints"
    found = sorted((p for p in root.glob("step-*") if p.is_dir()), reverse=True)
    latest = root / "latest"
    if latest.is_file():
        named = root / latest.read_text().strip()
        if named in found:
            found.remove(named)
            found.insert(0, named)
    return found


def load_training_checkpoint(
    ckpt: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    aux: dict[str, nn.Module | torch.optim.Optimizer] | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore model, optimizer (and ``aux``) from ``ckpt``; return (state, rng tensors)."""
    try:
        state = json.loads((ckpt / STATE_NAME).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{ckpt / STATE_NAME}: unreadable ({exc})") from exc
    weights = read_weights(ckpt / WEIGHTS_NAME)
    tensors = read_weights(ckpt / OPTIMIZER_NAME)
    aux_tensors = read_weights(ckpt / AUX_NAME) if aux else {}
    try:
        model.load_state_dict(weights)
        _restore_optimizer(optimizer, tensors, state["optimizer"])
        if aux:
            _restore_aux(aux, aux_tensors, state.get("aux", {}))
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{ckpt}: does not fit this model/optimizer ({exc})") from exc
    rng = {k[4:]: v for k, v in tensors.items() if k.startswith("rng.")}
    return state, rng
