"""``rexnet-plugin predict``: classify images with a model folder as its inference.yml says;
``load_model`` is the one place that picks the runtime for a folder."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import runtime as rt
from .runtime import PRECISIONS
from .artifacts import (INFER_CONFIG_FILENAME, LEGACY_MODEL_FILENAME, MODEL_FILENAME,
                        ONNX_FILENAME, PARAMS_FILENAME, QUANTIZATION_FILENAME)
from .images import ImageItem, check_image, collect_images
from .infer_config import InferConfig, read_infer_config

RUNTIME_NAMES = {"paddle": "Paddle Inference (oneDNN)", "onnx": "ONNX Runtime",
                 "openvino": "OpenVINO"}
RUNTIMES = tuple(RUNTIME_NAMES)
DEFAULT_BATCH_SIZE = 8
PROGRESS_MIN_IMAGES = 32  # fewer finish before a progress bar would help


class ModelFolderError(ValueError):
    """A model folder that cannot be run as asked; names the folder and the fix."""


@dataclass
class LoadedModel:
    """A model folder ready to run: its runtime session and its inference.yml."""
    folder: Path
    runtime: str       # one of RUNTIMES
    precision: str     # "fp32", "bf16" or "int8" (quantized folder)
    config: InferConfig
    _session: object

    def run(self, images: np.ndarray) -> np.ndarray:
        """float32 [N, 3, H, W] -> the model's outputs [N, classes]."""
        run = {"paddle": rt.run_predictor, "onnx": rt.run_onnx, "openvino": rt.run_openvino}
        return run[self.runtime](self._session, images)

    def scores(self, outputs: np.ndarray) -> np.ndarray:
        """As PaddleClas's Topk reads them: softmax of the logits of a ``--logits`` export."""
        outputs = np.asarray(outputs, dtype=np.float32)
        if self.config.softmax is not False:
            return outputs
        e = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def describe(self) -> str:
        return f"{self.folder}: {self.precision}, {RUNTIME_NAMES[self.runtime]}"


def check_folder(model_dir, error=ModelFolderError) -> tuple[Path, bool, bool]:
    """(folder, has Paddle Inference files, has inference.onnx); ``error`` names the fix.
    A model folder is read only from inside: no file may link out of it."""
    from ..files import is_regular_file_inside
    folder = Path(model_dir)
    if not folder.is_dir():
        raise error(f"model folder {folder} {'is a file' if folder.exists() else 'not found'}: "
                    f"pass the folder that rexnet-plugin export (or quantize, or PaddleClas's "
                    f"tools/export_model.py -o Global.export_for_fd=True) wrote")
    has_paddle = (folder / MODEL_FILENAME).is_file() and (folder / PARAMS_FILENAME).is_file()
    has_onnx = (folder / ONNX_FILENAME).is_file()
    if (folder / LEGACY_MODEL_FILENAME).is_file() and not (has_paddle or has_onnx):
        raise error(f"{folder} holds an old-IR model ({LEGACY_MODEL_FILENAME}, Paddle 2.x): "
                    f"re-export it on Paddle 3 (rexnet-plugin export, or PaddleClas's "
                    f"tools/export_model.py), which writes {MODEL_FILENAME}")
    if not (has_paddle or has_onnx):
        raise error(f"{folder} is not a model folder: it has neither {MODEL_FILENAME} + "
                    f"{PARAMS_FILENAME} (Paddle Inference) nor {ONNX_FILENAME} (ONNX Runtime). "
                    f"Pass a folder written by rexnet-plugin export or quantize, or export one: "
                    f"rexnet-plugin export ReXNet_1_0 --weights CKPT -o {folder}")
    for name in (MODEL_FILENAME, PARAMS_FILENAME, ONNX_FILENAME, INFER_CONFIG_FILENAME):
        if os.path.lexists(folder / name) and not is_regular_file_inside(folder / name, folder):
            raise error(f"{folder / name} is a link to a file outside {folder}, or not a regular "
                        f"file; a model folder is read only from inside: copy the file into it")
    return folder, has_paddle, has_onnx


def check_onnx_file(path: Path, error=ModelFolderError) -> None:
    """The external data of ONNX model ``path`` lie inside its folder: onnx.load (and OpenVINO)
    would follow a link anywhere."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors  # initializers and attributes
    from ..files import is_regular_file_inside
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # DecodeError for a damaged or truncated file
        raise error(f"{path} is not a readable ONNX model ({type(err).__name__}); the files "
                    f"are damaged: export the model again") from None
    for tensor in _get_all_tensors(model):
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if tensor.data_location == onnx.TensorProto.EXTERNAL and not is_regular_file_inside(
                path.parent / location, path.parent):
            raise error(f"{path}: the external data of tensor {tensor.name[:100]!r} "
                        f"({location[:200]!r}) resolves outside {path.parent}, or is not a "
                        f"regular file; a model folder is read only from inside")


def load_model(model_dir: str | os.PathLike, runtime: str | None = None,
               precision: str = "fp32", threads: int | None = None) -> LoadedModel:
    """Open a model folder. ``runtime=None`` picks the fastest measured (docs/speed.md): ONNX
    Runtime for inference.onnx in fp32 or int8; for bf16 (an fp32 model in bfloat16) OpenVINO
    where installed, else Paddle Inference; Paddle Inference for a folder without ONNX."""
    if runtime not in (None, *RUNTIMES) or precision not in PRECISIONS:
        raise ValueError(f"runtime={runtime!r}, precision={precision!r}: expected a runtime of "
                         f"{', '.join(RUNTIMES)} (or None) and a precision of "
                         f"{', '.join(PRECISIONS)}")
    folder, has_paddle, has_onnx = check_folder(model_dir)
    int8 = (folder / QUANTIZATION_FILENAME).is_file()
    if runtime is None:
        runtime = ("onnx" if has_onnx and (int8 or precision == "fp32") else "openvino"
                   if has_onnx and rt.openvino_available() else "paddle" if has_paddle
                   else "onnx")
    if precision == "bf16" and (runtime == "onnx" or int8):
        raise ModelFolderError(
            f"--precision bf16 runs an fp32 model in bfloat16 through Paddle Inference "
            f"(oneDNN) or OpenVINO; {folder} is "
            f"{'an int8 model' if int8 else 'asked for ONNX Runtime'}. "
            f"Drop --precision bf16{'' if int8 else ' or --runtime onnx'}.")
    names = (MODEL_FILENAME, PARAMS_FILENAME) if runtime == "paddle" else (ONNX_FILENAME,)
    if not (has_paddle if runtime == "paddle" else has_onnx):
        raise ModelFolderError(
            f"--runtime {runtime}: {folder} has no {' + '.join(names)}. Export it (rexnet-plugin "
            f"export ...{'' if runtime == 'paddle' else ' --onnx'} -o {folder}), or use "
            f"--runtime {'onnx' if runtime == 'paddle' else 'paddle'}.")
    from ..extras import install_command, require
    if runtime == "openvino":
        if not rt.openvino_available():
            raise ModelFolderError(f"--runtime openvino: OpenVINO is not installed here: "
                                   f"{install_command('openvino')}, or use --runtime onnx or "
                                   f"paddle.")
        check_onnx_file(folder / ONNX_FILENAME)  # ONNX Runtime checks this itself
    if runtime == "onnx":
        require(f"{folder} (ONNX Runtime)", "onnxruntime")
    config = read_infer_config(folder)  # InferConfigError says how to write one
    try:
        if runtime == "paddle":
            session = rt.create_predictor(folder, threads=threads, precision=precision)
        elif runtime == "openvino":
            session = rt.create_openvino_session(folder / ONNX_FILENAME, threads=threads,
                                                 precision=precision)
        else:
            session = rt.create_onnx_session(folder / ONNX_FILENAME, threads=threads)
    except rt.UnsupportedCPUError:
        raise
    except Exception as err:  # damaged, truncated or unknown-op files; external data outside
        reason = (str(err).strip().splitlines() or [""])[0][:300]
        raise ModelFolderError(
            f"{folder}: {', '.join(names)} cannot be loaded by {RUNTIME_NAMES[runtime]} "
            f"({type(err).__name__}: {reason}); the files are damaged, truncated or not "
            f"written by an export: export the model again") from None
    return LoadedModel(folder, runtime, "int8" if int8 else precision, config, session)


@dataclass(frozen=True)
class Prediction:
    image: str
    class_id: int
    score: float
    topk: list  # [[class_id, score], ...], best first
    label: int | None = None  # the list file's label, when one was given

    def as_json(self) -> dict:
        """Exactly the documented schema: image, class_id, score, topk."""
        return {"image": self.image, "class_id": self.class_id, "score": self.score,
                "topk": [list(pair) for pair in self.topk]}

    def as_text(self, label_list: list[str] | None = None) -> str:
        def name(i):  # quoted: ImageNet's names hold commas
            return f' "{printable(label_list[i])}"' if label_list and i < len(label_list) else ""
        best = ", ".join(f"{c}{name(c)} {s:.4f}" for c, s in self.topk)
        return (f"{printable(self.image)}: {self.class_id}{name(self.class_id)} "
                f"({self.score:.4f})  top-{len(self.topk)}: {best}")


def printable(text: str) -> str:
    """``text`` with control characters (terminal escape codes) shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def predict_items(model: LoadedModel, items: list[ImageItem], topk: int | None = None,
                  batch_size: int = DEFAULT_BATCH_SIZE, progress: bool | None = None):
    """Yield a Prediction per image, in order. ``topk`` defaults to inference.yml's;
    ``progress`` (a bar on stderr) defaults to a terminal and PROGRESS_MIN_IMAGES images."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: expected at least 1")
    if progress is None:
        progress = len(items) >= PROGRESS_MIN_IMAGES and sys.stderr.isatty()
    from tqdm import tqdm
    with tqdm(total=len(items), unit="img", file=sys.stderr, leave=False,
              disable=not progress) as bar:
        for start in range(0, len(items), batch_size):
            batch = items[start:start + batch_size]
            paths = [item.path for item in batch]
            images = model.config.stack([model.config.preprocess(p) for p in paths], paths)
            scores = model.scores(model.run(images))
            for item, row in zip(batch, scores):
                best = [[int(i), float(row[i])]  # stable: ties keep the lower class id first
                        for i in np.argsort(-row, kind="stable")[:topk or model.config.topk]]
                yield Prediction(str(item.path), best[0][0], best[0][1], best, item.label)
            bar.update(len(batch))


def prepare_inputs(inputs) -> list[ImageItem]:
    """The images of ``inputs``, each header checked: a bad file fails before any output."""
    items = collect_images(inputs)
    for item in items:
        check_image(item.path)
    return items


def predict(model_dir: str | os.PathLike, inputs, topk: int | None = None,
            batch_size: int = DEFAULT_BATCH_SIZE, runtime: str | None = None,
            precision: str = "fp32", progress: bool | None = False) -> list[Prediction]:
    """Classify ``inputs`` (image files, folders, list files) with a model folder."""
    items = prepare_inputs(inputs)
    model = load_model(model_dir, runtime=runtime, precision=precision)
    return list(predict_items(model, items, topk, batch_size, progress))


def run_from_args(args) -> int:
    """``rexnet-plugin predict``; bad input raises ValueError (cli.main: exit 2)."""
    import json
    for option, value in (("--topk", args.topk), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise ValueError(f"{option} {value}: expected at least 1")
    try:
        items = prepare_inputs(args.inputs)
        model = load_model(args.model_dir, runtime=args.runtime, precision=args.precision)
        print(f"rexnet-plugin predict: {model.describe()}", file=sys.stderr)
        labelled = correct = 0
        for prediction in predict_items(model, items, args.topk, args.batch_size):
            print(json.dumps(prediction.as_json()) if args.json
                  else prediction.as_text(model.config.label_list), flush=True)
            if prediction.label is not None:
                labelled += 1
                correct += prediction.class_id == prediction.label
        if labelled:  # a list file's labels: the accuracy (stderr keeps --json parseable)
            print(f"top-1: {100 * correct / labelled:.2f}% ({correct}/{labelled} labelled "
                  f"images, {model.describe()})", file=sys.stderr if args.json else sys.stdout)
    except BrokenPipeError:  # `| head`: the reader has all it wants
        sys.stderr.close()
    return 0
