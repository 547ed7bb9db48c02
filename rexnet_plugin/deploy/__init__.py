"""Running ReXNet outside dygraph: export (Paddle Inference, ONNX), runtimes
and predictors, and the speed measurement behind ``rexnet-plugin bench``."""
