"""Checkpoint files to ``{key: array}`` and back, running nothing a file asks for."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np

from .errors import CorruptCheckpointError, NotReXNetError, UnsafeCheckpointError, WeightsError
from ..files import atomic_path

FORMATS = ("pdparams", "safetensors", "pth")
_EXTENSIONS = {".pdparams": "pdparams", ".safetensors": "safetensors",
               ".pth": "pth", ".pt": "pth", ".bin": "pth", ".ckpt": "pth", ".tar": "pth"}


def torch_install_hint() -> str:
    from ..extras import install_command
    return (f"{install_command('torch')} (a CPU build of torch installed first avoids "
            f"several GB of CUDA)")


def format_of_suffix(suffix: str) -> str | None:
    return _EXTENSIONS.get(suffix.lower())


def _looks_like(head: bytes) -> str:
    if not head:
        return "the file is empty"
    if b"<html" in head.lower():
        return "it is an HTML page"
    if head[:2] == b"\x1f\x8b":
        return "it is a gzip archive; unpack it first"
    if all(32 <= c < 127 or c in b"\t\r\n" for c in head):
        return "it is text (JSON, XML: a server's error reply?)"
    return f"its first bytes {head[:8]!r} match no checkpoint format"


def read_checkpoint(path: str | os.PathLike, declared_format: str | None = None,
                    name: str | None = None) -> tuple[dict, str]:
    """``({key: array}, format)``; ``name``: the file in messages (a download's URL)."""
    path, name = Path(path), name or str(path)
    if declared_format not in (None, *FORMATS):
        raise WeightsError(f"format={declared_format!r} is not supported; use one of "
                           f"{', '.join(FORMATS)}")
    if not path.is_file():
        raise WeightsError(f"checkpoint {name} does not exist (or is not a file)")
    try:
        with open(path, "rb") as f:
            head, size = f.read(512), os.fstat(f.fileno()).st_size
    except OSError as err:
        raise WeightsError(f"cannot read {name}: {err.strerror}") from None
    if declared_format:
        fmt = declared_format
    elif head[:4] == b"PK\x03\x04":  # torch >= 1.6 saves a zip archive
        fmt = "pth"
    elif head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < size:
        fmt = "safetensors"  # 8-byte header length, then a JSON header
    elif head[:1] == b"\x80":  # a pickle: legacy torch file or .pdparams
        fmt = "pth" if format_of_suffix(path.suffix) == "pth" else "pdparams"
    else:
        raise CorruptCheckpointError(f"{name} is not a checkpoint: {_looks_like(head)}. Pass a "
                                     f".pdparams, .safetensors or PyTorch file.")
    reader = {"pdparams": _read_pdparams, "safetensors": _read_safetensors, "pth": _read_torch}[fmt]
    try:
        obj = reader(path, name)
    except WeightsError:
        raise
    except Exception as err:  # EOFError, UnpicklingError, SafetensorError ... all mean unreadable
        raise CorruptCheckpointError(
            f"{name} cannot be read as a {fmt} file ({type(err).__name__}: {err}); it is "
            f"truncated or damaged. Download or copy it again.") from None
    return _tensor_dict(obj, name), fmt


# What paddle.save writes for a state dict: ndarrays (rebuilt by numpy's own
# functions), dtypes, plain containers; a Tensor pickles as (name, ndarray).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("collections", "OrderedDict"), ("builtins", "tuple"), ("builtins", "list"),
    ("_codecs", "encode"),  # protocol 2 pickles bytes as _codecs.encode(text, "latin1")
}


def _read_pdparams(path: Path, name: str) -> dict:
    def latin1_bytes(text, encoding="latin1"):
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r})")
        return text.encode("latin1")

    class ArraysOnly(pickle.Unpickler):
        def find_class(self, module, attr):
            if (module, attr) not in _ALLOWED_GLOBALS:
                raise UnsafeCheckpointError(f"{name} wants to load the Python object {module}."
                                            f"{attr}, not only arrays; refused, nothing was run")
            if module == "_codecs":
                return latin1_bytes
            try:
                return super().find_class(module, attr)
            except ImportError:  # numpy 2 pickles name numpy._core, which numpy 1 lacks
                return super().find_class(module.replace("numpy._core", "numpy.core"), attr)
    with open(path, "rb") as f:
        return ArraysOnly(f).load()


_SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
                       "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}  # little-endian


def _read_safetensors(path: Path, name: str) -> dict:
    import safetensors
    state = {}
    for key, entry in safetensors.deserialize(path.read_bytes()):
        dtype, data = entry["dtype"], entry["data"]
        if dtype == "BF16":  # a bfloat16 is the top half of a float32: widen exactly
            array = (np.frombuffer(data, "<u2").astype(np.uint32) << 16).view(np.float32)
        elif dtype in _SAFETENSORS_DTYPES:
            array = np.frombuffer(data, _SAFETENSORS_DTYPES[dtype])
        else:
            raise WeightsError(f"{name}: tensor {key} has dtype {dtype}, which this package "
                               f"cannot read; save the weights as float32, float16 or bfloat16")
        try:
            state[key] = array.reshape(entry["shape"])
        except ValueError:  # a shape such as [0, 2**62]: numpy cannot even size it
            raise CorruptCheckpointError(f"{name}: tensor {key[:100]} has the impossible shape "
                                         f"{str(entry['shape'])[:100]}") from None
    return state


def _read_torch(path: Path, name: str) -> dict:
    try:
        import torch
    except ImportError:
        raise WeightsError(f"{name} is a PyTorch checkpoint; reading it needs torch: "
                           f"{torch_install_hint()}, or 'rexnet-plugin convert' it to "
                           f".safetensors where torch is installed") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # Never repeat torch's advice (weights_only=False would run the file's code).
        wanted = re.search(r"GLOBAL ([\w.]+)", str(err))
        if wanted:
            raise UnsafeCheckpointError(
                f"{name} wants to load the Python object {wanted.group(1)}, so "
                f"torch.load(weights_only=True) refused it and nothing was run. Save only the "
                f"model's state_dict (torch.save(model.state_dict(), ...)).") from None
        raise CorruptCheckpointError(f"{name}: its pickle data is invalid; it is truncated or "
                                     f"damaged. Download or copy it again.") from None

    def to_numpy(value):
        if isinstance(value, dict):
            return {k: to_numpy(v) for k, v in value.items()}
        if isinstance(value, torch.Tensor):  # numpy has no bfloat16: widen it
            return (value.float() if value.dtype == torch.bfloat16 else value).cpu().numpy()
        return value
    return to_numpy(obj)


def _tensor_dict(obj, path: str) -> dict:
    """Unwrap ``{"state_dict": ...}`` and Tensor tuples; check every value is an array."""
    if not isinstance(obj, dict):
        raise NotReXNetError(f"{path} holds a {type(obj).__name__}, not a state dict "
                             f"(a mapping from parameter names to arrays).")
    # Wrappers that training scripts put around a state dict (timm, PaddleClas, others).
    obj = next((obj[w] for w in ("state_dict", "model", "model_state_dict", "net")
                if isinstance(obj.get(w), dict)), obj)
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
        raise NotReXNetError(f"{path} is not a model state dict: {', '.join(other[:5])} hold no "
                             f"arrays; pass the weights file")
    if not out:
        raise NotReXNetError(f"{path} holds no arrays; it is not a checkpoint.")
    return out


def write_checkpoint(state: dict, path: str | os.PathLike, metadata: dict | None = None) -> str:
    """Write ``state`` to ``path`` (.pdparams or .safetensors) atomically. Returns the format."""
    path = Path(path)
    fmt = format_of_suffix(path.suffix)
    if fmt not in ("pdparams", "safetensors"):
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
