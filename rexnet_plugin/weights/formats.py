"""Read and write checkpoint files: .pdparams, .safetensors and PyTorch .pth.

Readers return ``{key: numpy array}`` with the keys as stored (no renaming;
``layouts`` does that). Nothing here executes code from a file:

* ``.safetensors`` is read with ``safetensors.numpy``: no pickle, no torch.
* ``.pth`` is read with ``torch.load(weights_only=True)``, which refuses
  anything but tensors and plain containers. torch is an optional extra.
* ``.pdparams`` is a pickle. ``paddle.load`` would unpickle anything, so we
  read it with an unpickler that only admits numpy arrays and plain
  containers, and refuses every other object before building it.

Writers go through a temp file in the destination folder and an atomic
rename, so a failure or Ctrl-C never leaves a half-written file.
"""

from __future__ import annotations

import importlib
import os
import pickle
from pathlib import Path

import numpy as np

from .errors import CorruptCheckpointError, NotReXNetError, UnsafeCheckpointError, WeightsError
from ..files import atomic_path

FORMATS = ("pdparams", "safetensors", "pth")
WRITABLE_FORMATS = ("pdparams", "safetensors")
_EXTENSIONS = {".pdparams": "pdparams", ".safetensors": "safetensors",
               ".pth": "pth", ".pt": "pth", ".bin": "pth", ".ckpt": "pth", ".tar": "pth"}
# Wrappers that training scripts put around a state dict (timm, PaddleClas, others).
_STATE_DICT_WRAPPERS = ("state_dict", "model", "model_state_dict", "net")
TORCH_INSTALL_HINT = "pip install 'rexnet-plugin[torch]'  (or: pip install torch)"


def format_of(path: str | os.PathLike, declared: str | None = None) -> str:
    """The file's format: ``declared`` if given, else from its first bytes, else its suffix."""
    path = Path(path)
    if declared is not None:
        if declared not in FORMATS:
            raise WeightsError(f"format={declared!r} is not supported; use one of {', '.join(FORMATS)}")
        return declared
    by_suffix = _EXTENSIONS.get(path.suffix.lower())
    try:
        with open(path, "rb") as f:
            head = f.read(16)
        size = path.stat().st_size
    except OSError as err:
        raise WeightsError(f"cannot read {path}: {err}") from None
    if head[:4] == b"PK\x03\x04":  # torch >= 1.6 saves a zip archive
        return "pth"
    if len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < size:
        return "safetensors"  # 8-byte header length, then a JSON header
    if head[:1] == b"\x80":  # a pickle: legacy torch file or .pdparams
        return "pth" if by_suffix == "pth" else "pdparams"
    if by_suffix is not None:
        return by_suffix  # unreadable content; the reader will say so
    raise CorruptCheckpointError(
        f"{path} is not a checkpoint this package can read (not .pdparams, .safetensors "
        f"or a PyTorch file; first bytes {head[:8]!r}). Pass a ReXNet checkpoint, or "
        f"name the format with format=/--src-format if the suffix is unusual.")


def read_checkpoint(path: str | os.PathLike, declared_format: str | None = None) -> tuple[dict, str]:
    """``({key: array}, format)`` of a local checkpoint file, keys as stored."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist (or is not a file)")
    fmt = format_of(path, declared_format)
    reader = {"pdparams": _read_pdparams, "safetensors": _read_safetensors, "pth": _read_torch}[fmt]
    return _tensor_dict(reader(path), path), fmt


# -- .pdparams: a pickle, read with an allow-list ----------------------------

def _numpy_attr(module: str, name: str):
    # numpy 2 pickles name numpy._core, numpy 1 names numpy.core; accept both.
    for candidate in (module, module.replace("numpy._core", "numpy.core"),
                      module.replace("numpy.core", "numpy._core")):
        try:
            return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    raise AttributeError(f"{module}.{name}")


# What paddle.save writes for a state dict: ndarrays (rebuilt by numpy's own
# functions), dtypes, plain containers; a Tensor pickles as (name, ndarray).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("collections", "OrderedDict"), ("builtins", "tuple"), ("builtins", "list"),
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, path):
        super().__init__(file)
        self.path = path

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafeCheckpointError(
                f"{self.path} wants to load the Python object {module}.{name}; a .pdparams "
                f"file should hold only arrays, so it was refused and nothing was run. "
                f"If you wrote this file yourself and trust it, load it with paddle.load "
                f"and save the weights as .safetensors (see README, 'Pretrained weights').")
        if module.startswith("numpy"):
            return _numpy_attr(module, name)
        return super().find_class(module, name)


def _read_pdparams(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return _ArraysOnlyUnpickler(f, path).load()
    except WeightsError:
        raise
    except Exception as err:  # EOFError, UnpicklingError, ValueError ... all mean unreadable
        raise CorruptCheckpointError(
            f"{path} cannot be read as a .pdparams file ({type(err).__name__}: {err}); "
            f"it is truncated or damaged. Download or copy it again.") from None


# -- .safetensors: no pickle, no torch ----------------------------------------

def _read_safetensors(path: Path) -> dict:
    from safetensors.numpy import load_file
    try:
        return load_file(str(path))
    except Exception as err:  # SafetensorError for truncated headers or data
        raise CorruptCheckpointError(
            f"{path} cannot be read as a .safetensors file ({err}); it is truncated or "
            f"damaged. Download or copy it again.") from None


# -- PyTorch .pth: torch.load(weights_only=True) -------------------------------

def _import_torch(path: Path):
    try:
        import torch
    except ImportError:
        raise WeightsError(
            f"{path} is a PyTorch checkpoint, and reading it needs torch, which is not "
            f"installed: {TORCH_INSTALL_HINT}. Or convert it once where torch is "
            f"installed (rexnet-plugin convert {path.name} {path.stem}.safetensors) "
            f"and use the .safetensors file, which needs no torch.") from None
    return torch


def _read_torch(path: Path) -> dict:
    torch = _import_torch(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"{path} holds Python objects other than tensors, so torch.load(weights_only=True) "
            f"refused it and nothing was run ({str(err).splitlines()[0]}). Save only the "
            f"model's state_dict (torch.save(model.state_dict(), ...)).") from None
    except Exception as err:  # RuntimeError for a damaged zip, EOFError for a short pickle
        raise CorruptCheckpointError(
            f"{path} cannot be read as a PyTorch checkpoint ({type(err).__name__}: {err}); "
            f"it is truncated or damaged. Download or copy it again.") from None

    def to_numpy(value):
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            if value.dtype == torch.bfloat16:  # numpy has no bfloat16
                value = value.float()
            return value.numpy()
        return value
    if isinstance(obj, dict):
        obj = {k: (to_numpy(v) if not isinstance(v, dict)
                   else {kk: to_numpy(vv) for kk, vv in v.items()}) for k, v in obj.items()}
    return obj


# -- common post-processing ---------------------------------------------------

def _tensor_dict(obj, path: Path) -> dict:
    """Unwrap ``{"state_dict": ...}`` and Tensor tuples; check every value is an array."""
    if not isinstance(obj, dict):
        raise NotReXNetError(f"{path} holds a {type(obj).__name__}, not a state dict "
                             f"(a mapping from parameter names to arrays).")
    for wrapper in _STATE_DICT_WRAPPERS:
        if isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    out, other = {}, []
    for key, value in obj.items():
        if isinstance(key, str) and key.endswith("@@"):
            continue  # paddle bookkeeping such as "StructuredToParameterName@@"
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], np.ndarray):
            value = value[1]  # paddle.save(Tensor) pickles (name, ndarray)
        if isinstance(value, np.ndarray):
            out[str(key)] = value
        else:
            other.append(str(key))
    if other:
        raise NotReXNetError(
            f"{path} is not a model state dict: {', '.join(other[:5])} "
            f"{'are' if len(other) > 1 else 'is'} not arrays. Optimizer states (.pdopt) and "
            f"training checkpoints with extra entries cannot be loaded; pass the weights file.")
    if not out:
        raise NotReXNetError(f"{path} holds no arrays; it is not a checkpoint.")
    return out


def write_checkpoint(state: dict, path: str | os.PathLike, metadata: dict | None = None) -> str:
    """Write ``state`` to ``path`` (.pdparams or .safetensors) atomically. Returns the format."""
    path = Path(path)
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt not in WRITABLE_FORMATS:
        raise WeightsError(f"cannot write {path}: the destination must end in .pdparams "
                           f"or .safetensors (writing .pth is left to PyTorch)")
    arrays = {k: np.ascontiguousarray(v) for k, v in state.items()}
    with atomic_path(path) as tmp:
        if fmt == "pdparams":
            import paddle  # paddle.save writes exactly what paddle.load and PaddleClas expect
            paddle.save(arrays, str(tmp))
        else:
            from safetensors.numpy import save_file
            save_file(arrays, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
    return fmt
