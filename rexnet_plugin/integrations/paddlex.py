"""ReXNet in PaddleX 3 with no fork: inference, pipeline, training, serving (docs/paddlex.md).

The ``register*`` entry points use PaddleX internals (tested: ``TESTED_PADDLEX``); if those
changed, one warning and PaddleX runs without ReXNet. No paddle import here (PaddleX forbids it).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
import os
import sys
from pathlib import Path

from ..deploy.artifacts import INFER_CONFIG_FILENAME
from ..deploy.images import check_image_size
from ..extras import install_command
from ..zoo import DEFAULT_VARIANT, VARIANTS

TESTED_PADDLEX = "3.7.2"  # the [paddlex] extra pins it
# PaddleX engines that run our exports; "hpi" needs ultra-infer (not on PyPI).
ENGINES = ("paddle_static", "onnxruntime", "hpi")
# PIL's names of the formats PaddleX's serving decoder (OpenCV) reads.
SERVING_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "JPEG2000", "PPM", "MPO")
PIPELINE_NAME = "image_classification"
_MARK = "rexnet_plugin_wrapped"

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
    pass


def paddlex_version() -> str:
    return (getattr(sys.modules.get("paddlex"), "__version__", None)
            or importlib.metadata.version("paddlex"))


def registered_engines(model_name: str) -> tuple[str, ...]:
    """The PaddleX engines bound to ``model_name`` (imports PaddleX), or PaddleXError."""
    try:
        from paddlex.inference.models import bindings
    except ImportError as exc:
        raise PaddleXError(f"PaddleX is not installed ({exc}): {install_command('paddlex')} "
                           f"(PaddleX {TESTED_PADDLEX} and what its classifier needs)") from None
    engines = tuple(bindings.try_get_supported_engines(model_name) or ())
    if not engines:
        raise PaddleXError(
            f"PaddleX {paddlex_version()} has no binding for {model_name}: the registration "
            f"failed (see the warning above; tested with PaddleX {TESTED_PADDLEX}) or the "
            f"autoload hook is off (REXNET_PLUGIN_AUTOLOAD=0, or rexnet-plugin not installed "
            f"with pip)")
    return engines


def _warn_once(key: str, message: str) -> list:
    if key not in _warned:
        _warned.add(key)
        _log.warning(message)
    return []


def _api_changed(what: str) -> list:
    version = paddlex_version()
    return _warn_once("api", f"rexnet-plugin: cannot register the ReXNet models with PaddleX "
                      f"{version} ({what}). PaddleX runs as usual, without ReXNet. rexnet-plugin "
                      f"was tested with PaddleX {TESTED_PADDLEX}" +
               ("; please report this." if version == TESTED_PADDLEX else
                f"; install it with {install_command('paddlex')}, or report this."))


def register(module) -> list[str]:
    """Entry point of ``paddlex.plugins`` (``module``: ``paddlex.inference.models``):
    bind every variant to PaddleX's classifier predictor. Returns the names bound."""
    try:
        bindings = importlib.import_module(module.__name__ + ".bindings")
        predictor = _classifier(importlib.import_module(
            module.__name__ + ".image_classification").ClasRunnerPredictor)
        todo = {engine: [n for n in VARIANTS if bindings.try_get_binding(n, engine) is None]
                for engine in ENGINES}  # a name PaddleX binds itself stays PaddleX's
        todo = {engine: names for engine, names in todo.items() if names}
        if todo:
            bindings.register_predictor_binding_map(predictor, {
                engine: [bindings.create_binding_registration(names, runner_builder=_hpi_runner)]
                if engine == "hpi" else names for engine, names in todo.items()})
        _wrap(module, "resolve_model_name", _checking_model_dir)
        return todo.get(ENGINES[0], [])
    except Exception as exc:  # a changed internal API: PaddleX must keep working
        return _api_changed(f"{type(exc).__name__}: {exc}")


def _wrap(module, name: str, wrapper) -> None:
    """Replace ``module.name`` (looked up at call time) by ``wrapper(original)``, once."""
    original = getattr(module, name, None)
    if original is not None and not getattr(original, _MARK, False):
        wrapped = functools.wraps(original)(wrapper(original))
        setattr(wrapped, _MARK, True)
        setattr(module, name, wrapped)


@functools.lru_cache(maxsize=None)
def _classifier(base):
    """PaddleX's classifier predictor, giving each image its own top-k (3.7.2 splits a
    batch only where values are lists) and refusing images with an unbounded resize."""

    class ReXNetClasPredictor(base):
        def _build(self):
            preprocessors, postprocessors = super()._build()
            read = preprocessors["Read"]

            def read_checked(imgs):
                images = read(imgs=imgs)
                for image in images:
                    check_image_size(image.shape[1], image.shape[0], "the image")
                return images

            preprocessors["Read"] = read_checked
            return preprocessors, postprocessors

        def process(self, batch_data, *args, **kwargs):
            result = super().process(batch_data, *args, **kwargs)
            result["class_ids"] = [ids.tolist() for ids in result["class_ids"]]
            return result

    return ReXNetClasPredictor


def _hpi_runner(*, engine_config, default_builder, **kwargs):
    """PaddleX's automatic hpi backend looks the name up in its own model table; ReXNet
    is not there: take the user's hpi_config backend, else Paddle Inference."""
    engine_config = {**engine_config, "auto_config": False,
                     "backend": engine_config.get("backend") or "paddle"}
    return default_builder(engine_config=engine_config, **kwargs)


def _checking_model_dir(original):
    def resolve_model_name(*args, **kwargs):
        model_dir = kwargs.get("model_dir")
        if model_dir and kwargs.get("model_config") is None:
            check_model_dir(model_dir, kwargs.get("model_name"), only_rexnet=True)
        return original(*args, **kwargs)
    return resolve_model_name


# -- training ------------------------------------------------------------------------

def register_training(module) -> list[str]:
    """Entry point of ``paddlex.modules.plugins`` (``module``: ``paddlex.modules``):
    add each variant to PaddleX's PaddleClas suite (its shipped config) and to the
    name maps of its trainer, evaluator, exporter and dataset checker."""
    from .configs import shipped
    try:
        suite = "paddlex.repo_apis.PaddleClas_api"  # PaddleX's PaddleClas suite
        if suite not in sys.modules:
            if not os.environ.get("PADDLE_PDX_PADDLECLAS_PATH"):
                return []  # no PaddleClas tree (`paddlex --install PaddleClas`) to train with
            importlib.import_module(suite)  # registers the suite with that root
        register = importlib.import_module("paddlex.repo_apis.base.register")
        classifier = importlib.import_module(module.__name__ + ".image_classification")
        classes = [getattr(classifier, name) for name in
                   ("ClsTrainer", "ClsEvaluator", "ClsExportor", "ClsDatasetChecker")]
        registered = []
        for name in VARIANTS:
            try:
                register.get_registered_model_info(name)  # PaddleX's own, or already ours
            except KeyError:
                config = shipped("ppcls_configs", f"{name}.yaml")
                register.register_model_info({
                    "model_name": name, "suite": "Cls", "config_path": str(config),
                    "supported_apis": ["train", "evaluate", "predict", "export"]})
                for cls in classes:
                    getattr(cls, "__registered_map").setdefault(name, cls)
                registered.append(name)
        return registered
    except Exception as exc:
        return _warn_once("training", (
            f"rexnet-plugin: cannot register the ReXNet models for training with PaddleX "
            f"{paddlex_version()} ({type(exc).__name__}: {exc}); PaddleX runs as usual and its "
            f"inference still knows ReXNet if registered. Tested with PaddleX "
            f"{TESTED_PADDLEX}; train with PaddleClas's tools instead (docs/paddlex.md)."))


# -- model folders -------------------------------------------------------------------

def folder_model_name(model_dir: str | os.PathLike) -> str | None:
    """``Global.model_name`` of ``<model_dir>/inference.yml``, or None; ModelDirError."""
    import yaml
    path = Path(model_dir) / INFER_CONFIG_FILENAME
    if not path.is_file():
        raise MissingInferConfigError(
            f"{path} not found: pass the folder an export wrote; PaddleX reads the model name, "
            f"the preprocessing and the labels from its {INFER_CONFIG_FILENAME}. To fix, "
            f"{_FIX_EXPORT}.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ModelDirError(f"{path} is not valid YAML ({err}); {_FIX_EXPORT}") from None
    glob = data.get("Global") if isinstance(data, dict) else None
    name = glob.get("model_name") if isinstance(glob, dict) else None
    return name if isinstance(name, str) and name else None


def check_model_dir(model_dir: str | os.PathLike, model_name: str | None = None,
                    only_rexnet: bool = False) -> str:
    """The model name PaddleX will use for ``model_dir``, or ModelDirError naming the file,
    the key and the fix. ``only_rexnet``: leave PaddleX's own models to PaddleX."""
    try:
        found = folder_model_name(model_dir)
    except ModelDirError:
        if only_rexnet and model_name not in VARIANTS:
            return model_name  # not ours to judge
        raise
    if only_rexnet and model_name not in VARIANTS and found not in VARIANTS:
        return model_name
    path = Path(model_dir) / INFER_CONFIG_FILENAME
    if found is None:
        wanted = model_name or DEFAULT_VARIANT
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

def write_pipeline_config(path: str | os.PathLike, model_dir: str | os.PathLike,
                          model_name: str | None = None, batch_size: int = 1,
                          topk: int | None = None) -> Path:
    """Write PaddleX's image_classification pipeline YAML for a ReXNet export (atomically)."""
    import yaml
    from ..files import write_text
    for key, value in (("batch_size", batch_size), ("topk", topk)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f"{key}={value!r}: expected a positive integer")
    module = {"module_name": "image_classification",
              "model_name": check_model_dir(model_dir, model_name),
              "model_dir": str(Path(model_dir).resolve()), "batch_size": batch_size,
              **({"topk": topk} if topk is not None else {})}
    # Serving would draw the result with a font it downloads: off, so it answers offline.
    config = {"pipeline_name": PIPELINE_NAME, "SubModules": {"ImageClassification": module},
              "Serving": {"visualize": False}}
    header = ("# PaddleX image_classification pipeline for a ReXNet export (docs/paddlex.md).\n"
              "# Run: paddlex --pipeline THIS_FILE --input photo.jpg --device cpu\n"
              "# Serve: paddlex --serve --pipeline THIS_FILE --device cpu --port 8080\n")
    write_text(Path(path), header + yaml.safe_dump(config, sort_keys=False))
    return Path(path)


# -- serving -------------------------------------------------------------------------

def register_serving(module) -> None:
    """Entry point of ``paddlex.serving.plugins`` (``module``:
    ``paddlex.inference.serving.basic_serving``): a ReXNet pipeline's app answers a bad
    image with 422 in PaddleX's error envelope, instead of 500."""
    def checking_images(original):
        def create_pipeline_app(pipeline, pipeline_config, *args, **kwargs):
            app = original(pipeline, pipeline_config, *args, **kwargs)
            submodule = (pipeline_config.get("SubModules") or {}).get("ImageClassification")
            if (pipeline_config.get("pipeline_name") == PIPELINE_NAME
                    and (submodule or {}).get("model_name") in VARIANTS):
                _check_images(app)
            return app
        return create_pipeline_app
    _wrap(module, "create_pipeline_app", checking_images)


def _check_images(app) -> None:
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
    """(log id, what is wrong with the request's base64 image or None); reads the image
    header only. URLs and the rest of the request are left to PaddleX."""
    import base64
    import io
    import json
    from PIL import Image
    try:
        request = json.loads(body)
    except ValueError:
        request = None
    request = request if isinstance(request, dict) else {}
    log_id = request.get("logId") if isinstance(request.get("logId"), str) else \
        utils.generate_log_id()
    image = request.get("image")
    if not isinstance(image, str) or utils.is_url(image):
        return log_id, None
    try:
        data = base64.b64decode(image)  # as lenient as PaddleX
    except ValueError as err:  # binascii.Error
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
    try:
        check_image_size(width, height, "'image'")
    except ValueError as err:
        return log_id, str(err)
    return log_id, None
