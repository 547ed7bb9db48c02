"""ReXNet in PaddleX 3, with no fork: ``paddlex.create_model("ReXNet_1_5",
model_dir=EXPORT)`` and the image_classification pipeline just work.

PaddleX has no plugin discovery, and no ReXNet. Its inference finds a model
by name in a table of predictor bindings (``paddlex.inference.models.bindings``:
model name x engine -> predictor class). ``register(models_module)``, the
entry point of group ``paddlex.plugins``, runs once
``paddlex.inference.models`` has been imported (``integrations/autoload.py``;
``import paddlex`` imports it). It binds every variant of ``zoo.VARIANTS`` to
PaddleX's own classifier predictor (``ClasRunnerPredictor``, which reads
``inference.yml``) for the engines that run our exports: ``paddle_static``
(Paddle Inference, inference.json) and ``onnxruntime`` (inference.onnx,
``rexnet-plugin export --onnx``). A name PaddleX already binds stays PaddleX's.

The bindings API is internal to PaddleX (tested: ``TESTED_PADDLEX``). If it
is missing or behaves differently, one warning names the PaddleX version
and PaddleX carries on without ReXNet; nothing raises, and nothing here
imports paddle (``import paddlex`` refuses to have paddle imported under it).

Training through PaddleX (``paddlex.build_trainer``, its PaddleClas runner):
``register_training(modules_module)``, the entry point of group
``paddlex.modules.plugins``, runs once ``paddlex.modules`` has been imported.
PaddleX trains a model only if it knows the name twice: in its PaddleClas
suite's model table (``paddlex.repo_apis.base.register.register_model_info``:
the name and its PaddleClas config, here the shipped
``ppcls_configs/<name>.yaml``) and in the name -> class maps of its
trainer, evaluator, exporter and dataset checker (filled by each class's
``entities`` list at class creation). It then runs PaddleClas's own
``tools/train.py`` in a PaddleClas source tree, which PaddleX takes from
``paddlex --install PaddleClas`` (a git clone from GitHub) or from
``PADDLE_PDX_PADDLECLAS_PATH``; without either, PaddleX never loads its
PaddleClas suite, and the ReXNet names are left out (logged at debug level).

For a ReXNet model folder, PaddleX's terse errors about ``inference.yml``
(missing, or a model name that differs from ``Global.model_name``) become
errors that name the file, the key and the fix (``check_model_dir``).

The predictor bound is a small subclass of PaddleX's (``_classifier``): PaddleX
3.7.2 splits a batch's results per image only where they are lists, and its
Topk gives ``class_ids`` as one array, so every image got the whole batch's
ids (and ``paddlex --serve`` answered 500). It also refuses images whose
resize would be unbounded (``image_size_problem``).

Serving (``paddlex --serve``): ``register_serving``, the entry point of group
``paddlex.serving.plugins``, runs once ``paddlex.inference.serving.basic_serving``
has been imported. For a ReXNet pipeline only, the app checks each request's
image (base64, an image header, the size limits) before PaddleX decodes it, and
answers a bad one with 422 in PaddleX's error envelope instead of 500.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

from ..deploy.artifacts import INFER_CONFIG_FILENAME
from ..extras import install_command
from ..zoo import VARIANTS

# The PaddleX release this module was written and tested against (the
# [paddlex] extra pins it; tests/test_paddlex.py checks they agree).
TESTED_PADDLEX = "3.7.2"
# PaddleX engines that run the files `rexnet-plugin export` writes; "hpi"
# (PaddleX's high-performance inference) needs ultra-infer, not on PyPI.
ENGINES = ("paddle_static", "onnxruntime", "hpi")
HPI_DOCS = ("https://paddlepaddle.github.io/PaddleX/latest/en/pipeline_deploy/"
            "high_performance_inference.html")
# A longer side more than this many times the shorter one would make the
# resize to the short side unbounded (1x10000 pixels: 7 GB, 30 s).
MAX_ASPECT_RATIO = 100
# PIL's names of the formats PaddleX's serving decoder (OpenCV) reads (MPO: a
# camera JPEG with extra frames). GIF, ICO, TGA ... it does not.
SERVING_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "JPEG2000", "PPM", "MPO")
PIPELINE_NAME = "image_classification"
_MARK = "rexnet_plugin_model_dir_check"

_log = logging.getLogger(__name__)
_warned: set[str] = set()

_FIX_EXPORT = ("export the model with `rexnet-plugin export <variant> --weights W -o DIR`, or "
               "with PaddleClas's tools/export_model.py -o Global.export_for_fd=True on a "
               "shipped config (they set Global.pdx_model_name)")


class PaddleXError(RuntimeError):
    """PaddleX is missing, or cannot be used the way this package needs."""


class ModelDirError(ValueError):
    """A model folder PaddleX cannot use as a ReXNet model."""


class MissingInferConfigError(ModelDirError, FileNotFoundError):
    """The model folder has no inference.yml."""


def paddlex_version() -> str:
    """The installed PaddleX's version, without importing it ("?" if unknown)."""
    module = sys.modules.get("paddlex")
    version = getattr(module, "__version__", None)
    if version:
        return str(version)
    try:
        from importlib.metadata import version as dist_version
        return dist_version("paddlex")
    except Exception:
        return "?"


def require_paddlex():
    """Import PaddleX, or raise PaddleXError saying how to install it."""
    try:
        import paddlex
    except ImportError as exc:
        raise PaddleXError(
            f"PaddleX is not installed ({exc}). Install it with the plugin's extra: "
            f"{install_command('paddlex')} (PaddleX {TESTED_PADDLEX} and the cv "
            f"packages its classifier needs; see docs/paddlex.md)") from None
    return paddlex


def registered_engines(model_name: str) -> tuple[str, ...]:
    """The PaddleX engines bound to ``model_name`` (imports PaddleX); raises
    PaddleXError when PaddleX is missing or has no binding for it."""
    require_paddlex()
    version = paddlex_version()
    try:
        from paddlex.inference.models import bindings
        engines = tuple(bindings.try_get_supported_engines(model_name) or ())
    except Exception as exc:
        raise PaddleXError(f"cannot ask PaddleX {version} which engines run {model_name} "
                           f"({type(exc).__name__}: {exc}); rexnet-plugin was tested with "
                           f"PaddleX {TESTED_PADDLEX}") from None
    if not engines:
        raise PaddleXError(
            f"PaddleX {version} has no binding for {model_name}: the registration failed "
            f"(see the warning above; tested with PaddleX {TESTED_PADDLEX}) or the autoload "
            f"hook is off (REXNET_PLUGIN_AUTOLOAD=0, or rexnet-plugin not installed with pip)")
    return engines


def _warn_once(key: str, message: str) -> None:
    if key in _warned:
        return
    _warned.add(key)
    _log.warning(message)


def _api_changed(version: str, what: str) -> None:
    same = version == TESTED_PADDLEX
    _warn_once("api", (
        f"rexnet-plugin: cannot register the ReXNet models with PaddleX {version} "
        f"({what}). PaddleX runs as usual, without ReXNet. rexnet-plugin was tested with "
        f"PaddleX {TESTED_PADDLEX}"
        + ("; please report this." if same else
           f"; install it with {install_command('paddlex')}, or report this.")))



# -- registration --------------------------------------------------------------------

def register(module) -> list[str]:
    """Entry point of group ``paddlex.plugins`` (``module``:
    ``paddlex.inference.models``). Returns the names newly bound; never raises."""
    version = paddlex_version()
    try:
        return _register(module, version)
    except Exception as exc:  # a changed internal API: PaddleX must keep working
        _api_changed(version, f"{type(exc).__name__}: {exc}")
        return []


def _register(module, version: str) -> list[str]:
    import importlib
    try:
        bindings = importlib.import_module(module.__name__ + ".bindings")
        classifier = importlib.import_module(module.__name__ + ".image_classification")
        predictor = _classifier(classifier.ClasRunnerPredictor)
        register_map = bindings.register_predictor_binding_map
        try_get_binding = bindings.try_get_binding
        with_runner = bindings.create_binding_registration
    except (ImportError, AttributeError) as exc:
        _api_changed(version, f"{type(exc).__name__}: {exc}")
        return []

    todo: dict[str, list[str]] = {}
    kept = []
    for engine in ENGINES:
        for name in VARIANTS:
            existing = try_get_binding(name, engine)
            if existing is None:
                todo.setdefault(engine, []).append(name)
            elif getattr(existing, "predictor", None) is not predictor:
                kept.append(f"{name} ({engine})")
    if kept:
        _warn_once("kept", f"rexnet-plugin: PaddleX {version} already has {', '.join(kept)}; "
                           f"its own binding is kept.")
    if todo:
        register_map(predictor, {
            engine: [with_runner(names, runner_builder=_hpi_runner)] if engine == "hpi"
            else names for engine, names in todo.items()})
    missing = [f"{name} ({engine})" for engine, names in todo.items() for name in names
               if getattr(try_get_binding(name, engine), "predictor", None) is not predictor]
    if missing:
        _api_changed(version, f"register_predictor_binding_map left {', '.join(missing)} "
                              f"unbound")
        return []
    _wrap_model_resolver(module)
    _wrap_binding_lookup(module)
    return [name for name in VARIANTS if name in todo.get(ENGINES[0], ())]


@functools.lru_cache(maxsize=None)
def _classifier(base):
    """PaddleX's classifier predictor ``base``, giving each image its own top-k
    and refusing images whose resize would be unbounded (one class per base)."""

    class ReXNetClasPredictor(base):
        def _build(self):
            preprocessors, postprocessors = super()._build()
            read = preprocessors["Read"]

            def read_checked(imgs):
                images = read(imgs=imgs)
                for image in images:
                    problem = image_size_problem(image.shape[1], image.shape[0])
                    if problem:
                        raise ValueError(problem)
                return images

            preprocessors["Read"] = read_checked
            return preprocessors, postprocessors

        def process(self, batch_data, *args, **kwargs):
            result = super().process(batch_data, *args, **kwargs)
            # PaddleX splits a batch per image only where a value is a list.
            result["class_ids"] = [ids.tolist() for ids in result["class_ids"]]
            return result

    ReXNetClasPredictor.__qualname__ = ReXNetClasPredictor.__name__
    return ReXNetClasPredictor


def image_size_problem(width: int, height: int, max_pixels: int | None = None) -> str | None:
    """Why an image of ``width`` x ``height`` pixels is refused, or None."""
    if min(width, height) < 1:
        return f"the image is {width}x{height} pixels: it has no pixels"
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        return (f"the image is {width}x{height} pixels: one side is more than "
                f"{MAX_ASPECT_RATIO} times the other (resizing its short side to the model's "
                f"input would need unbounded memory); crop it to a less elongated shape")
    if max_pixels is not None and width * height > max_pixels:
        return (f"the image is {width}x{height} = {width * height} pixels, more than "
                f"{max_pixels}; send a smaller image")
    return None


def _hpi_runner(*, engine_config, default_builder, **kwargs):
    """PaddleX's high-performance runner for a ReXNet folder. Its automatic
    choice of backend looks the model name up in a table of PaddleX's own
    models; ReXNet is not there, so take the backend the user gave
    (hpi_config={"backend": ...}), else Paddle Inference."""
    engine_config = {**engine_config, "auto_config": False,
                     "backend": engine_config.get("backend") or "paddle"}
    return default_builder(engine_config=engine_config, **kwargs)


def _wrap_binding_lookup(module) -> None:
    """use_hpip=True (engine "hpi") without ultra-infer: say what is missing
    and where PaddleX documents it, for ReXNet names only."""
    original = getattr(module, "_get_predictor_binding", None)
    if original is None or getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def get_predictor_binding(model_name, engine, *args, **kwargs):
        import importlib.util
        if (model_name in VARIANTS and str(engine).lower() == "hpi"
                and importlib.util.find_spec("ultra_infer") is None):
            raise PaddleXError(
                f"use_hpip=True (engine 'hpi') for {model_name} needs PaddleX's "
                f"high-performance inference plugin, the package ultra-infer, which is not "
                f"installed (it is not on PyPI; PaddleX installs it with `paddlex --install "
                f"hpi-cpu` or hpi-gpu): see {HPI_DOCS} and docs/paddlex.md. "
                f"Without it, leave use_hpip off: engine 'paddle_static' (the default) or "
                f"'onnxruntime'.")
        return original(model_name, engine, *args, **kwargs)

    setattr(get_predictor_binding, _MARK, True)
    module._get_predictor_binding = get_predictor_binding


def _wrap_model_resolver(module) -> None:
    """Clear errors for a ReXNet folder: wrap the function create_predictor
    calls first (looked up at call time) to read a model folder's
    inference.yml. Other models pass through untouched. Optional: where
    PaddleX has no such function, its own errors stay."""
    original = getattr(module, "resolve_model_name", None)
    if original is None or getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def resolve_model_name(*args, **kwargs):
        model_dir = kwargs.get("model_dir")
        if model_dir and kwargs.get("model_config") is None:
            check_model_dir(model_dir, kwargs.get("model_name"), only_rexnet=True)
        return original(*args, **kwargs)

    setattr(resolve_model_name, _MARK, True)
    module.resolve_model_name = resolve_model_name


# -- training ----------------------------------------------------------------------

# PaddleX's image-classification module classes, each registered by name.
_CLS_MODULE_CLASSES = ("ClsTrainer", "ClsEvaluator", "ClsExportor", "ClsDatasetChecker")
_CLS_SUITE_MODULE = "paddlex.repo_apis.PaddleClas_api"
_PADDLECLAS_PATH_ENV = "PADDLE_PDX_PADDLECLAS_PATH"


def register_training(module) -> list[str]:
    """Entry point of group ``paddlex.modules.plugins`` (``module``:
    ``paddlex.modules``). Returns the names made trainable; never raises."""
    version = paddlex_version()
    try:
        return _register_training(module, version)
    except Exception as exc:
        _warn_once("training", (
            f"rexnet-plugin: cannot register the ReXNet models for training with PaddleX "
            f"{version} ({type(exc).__name__}: {exc}); PaddleX runs as usual and its "
            f"inference still knows ReXNet if registered. Tested with PaddleX "
            f"{TESTED_PADDLEX}; train with PaddleClas's tools instead (docs/paddlex.md)."))
        return []


def _register_training(module, version: str) -> list[str]:
    import importlib
    from .configs import ppcls_dir, ppcls_filename
    if _CLS_SUITE_MODULE not in sys.modules:
        if not os.environ.get(_PADDLECLAS_PATH_ENV):
            _log.debug("PaddleX has no PaddleClas suite (no `paddlex --install PaddleClas`, "
                       "%s unset): ReXNet is not registered for training", _PADDLECLAS_PATH_ENV)
            return []
        importlib.import_module(_CLS_SUITE_MODULE)  # registers the suite with that root
    register = importlib.import_module("paddlex.repo_apis.base.register")
    classifier = importlib.import_module(module.__name__ + ".image_classification")
    classes = [getattr(classifier, name) for name in _CLS_MODULE_CLASSES]
    maps = [getattr(cls, "__registered_map") for cls in classes]
    registered = []
    for name in VARIANTS:
        try:
            register.get_registered_model_info(name)
            continue  # PaddleX's own, or already ours
        except KeyError:
            pass
        config = ppcls_dir() / ppcls_filename(name)
        register.register_model_info({
            "model_name": name, "suite": "Cls", "config_path": str(config),
            "supported_apis": ["train", "evaluate", "predict", "export"]})
        for cls, table in zip(classes, maps):
            table.setdefault(name, cls)
        registered.append(name)
    return registered


# -- model folders -------------------------------------------------------------------

def folder_model_name(model_dir: str | os.PathLike) -> str | None:
    """``Global.model_name`` of ``<model_dir>/inference.yml`` (None when it
    names none). Raises MissingInferConfigError / ModelDirError."""
    import yaml
    folder = Path(model_dir)
    path = folder / INFER_CONFIG_FILENAME
    if not folder.is_dir():
        raise ModelDirError(f"model_dir {folder} is not a folder: pass the folder an export "
                            f"wrote (inference.json, inference.pdiparams, "
                            f"{INFER_CONFIG_FILENAME})")
    if not path.is_file():
        raise MissingInferConfigError(
            f"{folder} has no {INFER_CONFIG_FILENAME}: PaddleX reads the model name, the "
            f"preprocessing and the labels from it. To fix, {_FIX_EXPORT}.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ModelDirError(f"{path} is not valid YAML ({err}); {_FIX_EXPORT}") from None
    glob = data.get("Global") if isinstance(data, dict) else None
    name = glob.get("model_name") if isinstance(glob, dict) else None
    return name if isinstance(name, str) and name else None


def check_model_dir(model_dir: str | os.PathLike, model_name: str | None = None,
                    only_rexnet: bool = False) -> str:
    """The model name PaddleX will use for ``model_dir``; raises ModelDirError
    naming the file, the key and the fix when the folder cannot serve it.

    ``model_name``: the name the caller passes to PaddleX (None: the folder's).
    ``only_rexnet``: check only when the name or the folder's name is a ReXNet
    variant (PaddleX's own models keep PaddleX's own checks).
    """
    if only_rexnet and model_name not in VARIANTS:
        try:
            if folder_model_name(model_dir) not in VARIANTS:
                return model_name
        except ModelDirError:
            return model_name  # not ours to judge
    found = folder_model_name(model_dir)
    path = Path(model_dir) / INFER_CONFIG_FILENAME
    if found is None:
        wanted = model_name or "ReXNet_1_0"
        raise ModelDirError(
            f"{path} has no Global.model_name: PaddleX picks the predictor by it. Add "
            f"'Global: {{model_name: {wanted}}}' to the file, or re-export: PaddleClas's "
            f"tools/export_model.py writes it from Global.pdx_model_name (-o "
            f"Global.pdx_model_name={wanted}), rexnet-plugin export always writes it.")
    if model_name is not None and model_name != found:
        raise ModelDirError(
            f"model_name {model_name!r} does not match Global.model_name {found!r} in {path}: "
            f"the folder holds a {found} export. Pass model_name={found!r} (in a pipeline "
            f"YAML: SubModules.ImageClassification.model_name: {found}), or pass the folder "
            f"of a {model_name} export.")
    if model_name is None and found not in VARIANTS:
        raise ModelDirError(f"{path}: Global.model_name is {found!r}, not a ReXNet variant; "
                            f"expected one of {', '.join(VARIANTS)}")
    return found


# -- pipeline YAML -------------------------------------------------------------------

def pipeline_config(model_dir: str | os.PathLike, model_name: str | None = None,
                    batch_size: int = 1, topk: int | None = None) -> dict:
    """PaddleX's image_classification pipeline config for a ReXNet export
    (what ``paddlex --pipeline FILE`` and ``create_pipeline(config=FILE)`` read)."""
    name = check_model_dir(model_dir, model_name)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: expected a positive integer")
    module = {"module_name": "image_classification", "model_name": name,
              "model_dir": str(Path(model_dir).resolve()), "batch_size": batch_size}
    if topk is not None:
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise ValueError(f"topk={topk!r}: expected a positive integer")
        module["topk"] = topk
    # Serving (paddlex --serve) draws the result by default, with a font it
    # downloads: off, so a plain request answers offline.
    return {"pipeline_name": PIPELINE_NAME, "SubModules": {"ImageClassification": module},
            "Serving": {"visualize": False}}


def write_pipeline_config(path: str | os.PathLike, model_dir: str | os.PathLike,
                          model_name: str | None = None, batch_size: int = 1,
                          topk: int | None = None) -> Path:
    """Write ``pipeline_config(...)`` to ``path`` (atomically); return the path."""
    import yaml
    from ..files import write_text
    config = pipeline_config(model_dir, model_name, batch_size, topk)
    path = Path(path)
    header = ("# PaddleX image_classification pipeline for a ReXNet export, written by\n"
              "# rexnet-plugin. Run: paddlex --pipeline THIS_FILE --input photo.jpg --device cpu\n"
              "# Serve: paddlex --serve --pipeline THIS_FILE --device cpu --port 8080\n"
              "# (docs/paddlex.md; visualize: true also needs PADDLE_PDX_LOCAL_FONT_FILE_PATH\n"
              "# offline)\n")
    write_text(path, header + yaml.safe_dump(config, sort_keys=False))
    return path


# -- serving -------------------------------------------------------------------------

def register_serving(module) -> bool:
    """Entry point of group ``paddlex.serving.plugins`` (``module``:
    ``paddlex.inference.serving.basic_serving``): wrap its
    ``create_pipeline_app`` so that a ReXNet pipeline's app refuses bad images
    with 422. Returns whether it wrapped; never raises."""
    original = getattr(module, "create_pipeline_app", None)
    if original is None or getattr(original, _MARK, False):
        return False

    @functools.wraps(original)
    def create_pipeline_app(pipeline, pipeline_config, *args, **kwargs):
        app = original(pipeline, pipeline_config, *args, **kwargs)
        submodule = (pipeline_config.get("SubModules") or {}).get("ImageClassification") or {}
        if (pipeline_config.get("pipeline_name") == PIPELINE_NAME
                and submodule.get("model_name") in VARIANTS):
            _check_images(app)
        return app

    setattr(create_pipeline_app, _MARK, True)
    module.create_pipeline_app = create_pipeline_app
    return True


def _check_images(app) -> None:
    """Answer a request whose image is bad with 422 and PaddleX's error
    envelope (``logId``, ``errorCode``, ``errorMsg``) before PaddleX decodes
    it; an image URL is left to PaddleX."""
    from fastapi.responses import JSONResponse
    from paddlex.inference.serving.infra import utils
    from paddlex.inference.serving.schemas.image_classification import INFER_ENDPOINT
    from starlette.middleware.base import BaseHTTPMiddleware

    async def check(request, call_next):
        if request.method == "POST" and request.url.path == INFER_ENDPOINT:
            log_id, problem = _request_problem(await request.body(), utils)
            if problem:
                return JSONResponse(status_code=422, content={
                    "logId": log_id, "errorCode": 422, "errorMsg": problem})
        return await call_next(request)

    app.add_middleware(BaseHTTPMiddleware, dispatch=check)


def _request_problem(body: bytes, utils) -> tuple[str, str | None]:
    """(the log id, what is wrong with the request's base64 image or None).
    Reads the image header only; PaddleX's own validation handles the rest."""
    import base64
    import binascii
    import io
    import json
    from PIL import Image
    try:
        request = json.loads(body)
    except ValueError:
        request = None
    if not isinstance(request, dict):
        return utils.generate_log_id(), None
    log_id = request.get("logId")
    log_id = log_id if isinstance(log_id, str) else utils.generate_log_id()
    image = request.get("image")
    if not isinstance(image, str) or utils.is_url(image):
        return log_id, None
    try:
        data = base64.b64decode(image)  # as lenient as PaddleX
    except (binascii.Error, ValueError) as err:
        return log_id, f"'image' is neither a URL nor valid base64 ({err})"
    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height, kind = *header.size, header.format
    except Image.DecompressionBombError as err:
        return log_id, f"'image' is too large: {err}"
    except Exception:  # PIL raises several types for what it cannot identify
        return log_id, ("'image' is not an image (no image header found in its "
                        f"{len(data)} bytes); send a JPEG or PNG file, base64-encoded")
    if kind not in SERVING_FORMATS:
        return log_id, (f"'image' is a {kind} file, which PaddleX's decoder (OpenCV) does not "
                        f"read; send one of {', '.join(SERVING_FORMATS)}")
    problem = image_size_problem(width, height, utils.MAX_IMAGE_PIXELS)
    return log_id, problem and f"'image': {problem}"
