"""Export, runtimes, quantization, prediction and a quick timing of exported models."""
