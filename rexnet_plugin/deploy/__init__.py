"""Running ReXNet outside dygraph: export (Paddle Inference, ONNX), runtimes
and predictors, and the quick timing of ``rexnet-plugin bench``."""
