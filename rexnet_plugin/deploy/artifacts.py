"""The files an export folder holds. Light on purpose: no paddle import, so
the command line can show these defaults without loading a framework."""

MODEL_FILENAME = "inference.json"  # PIR program (paddle.jit.save on Paddle 3.x)
PARAMS_FILENAME = "inference.pdiparams"
ONNX_FILENAME = "inference.onnx"
# Opset 13 covers every op of the exported graph and every current ONNX
# Runtime; paddle2onnx raises it by itself if an op needs more.
DEFAULT_OPSET = 13
