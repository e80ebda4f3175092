"""Calibration: observe activations, pick scales (minmax/percentile/mse/entropy/PEG), emit Q/DQ ONNX."""
