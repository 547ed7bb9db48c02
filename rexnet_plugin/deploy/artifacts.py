"""The files an export folder holds. Light on purpose: no paddle import, so
the command line can show these defaults without loading a framework."""

MODEL_FILENAME = "inference.json"  # PIR program (paddle.jit.save on Paddle 3.x)
PARAMS_FILENAME = "inference.pdiparams"
ONNX_FILENAME = "inference.onnx"
# Preprocessing and post-processing, in PaddleClas's deploy format (what
# PaddleClas writes with Global.export_for_fd=True; PaddleX and FastDeploy
# read it): deploy/infer_config.py.
INFER_CONFIG_FILENAME = "inference.yml"
# Written beside an int8 model by rexnet-plugin quantize: how it was quantized.
QUANTIZATION_FILENAME = "quantization.json"
# What an export writes. A new export replaces this whole set in its folder:
# a file of the set that the new export does not write is deleted, so that no
# inference.onnx of an earlier model stays beside a new inference.json.
EXPORT_FILES = (MODEL_FILENAME, PARAMS_FILENAME, ONNX_FILENAME, INFER_CONFIG_FILENAME)
# Files of an earlier export that tools would read beside (or instead of) a
# new one, and that the new export therefore deletes too: the old-IR program
# (Paddle Inference loads it when FLAGS_enable_pir_api=0) and its info file.
LEGACY_MODEL_FILENAME = "inference.pdmodel"
STALE_EXPORT_FILES = (LEGACY_MODEL_FILENAME, "inference.pdiparams.info")
# Opset 13 covers every op of the exported graph and every current ONNX
# Runtime; paddle2onnx raises it by itself if an op needs more.
DEFAULT_OPSET = 13
