"""The files of a model folder; no paddle import, so the CLI can show these defaults."""

MODEL_FILENAME = "inference.json"  # PIR program (paddle.jit.save on Paddle 3.x)
PARAMS_FILENAME = "inference.pdiparams"
ONNX_FILENAME = "inference.onnx"
INFER_CONFIG_FILENAME = "inference.yml"  # PaddleClas's deploy format: deploy/infer_config.py
QUANTIZATION_FILENAME = "quantization.json"  # beside an int8 model: how it was quantized
LEGACY_MODEL_FILENAME = "inference.pdmodel"  # old-IR program (Paddle 2.x)
# What an export replaces as one set: nothing of an earlier model stays beside a new one
# (the old-IR files are what Paddle Inference loads with FLAGS_enable_pir_api=0).
EXPORT_FILES = (MODEL_FILENAME, PARAMS_FILENAME, ONNX_FILENAME, INFER_CONFIG_FILENAME,
                QUANTIZATION_FILENAME, LEGACY_MODEL_FILENAME, "inference.pdiparams.info")
# Opset 13 covers the exported graph and every current ONNX Runtime.
DEFAULT_OPSET = 13
