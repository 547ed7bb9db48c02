"""Export, runtimes, quantization and prediction of exported models."""
