"""Hugging Face → ONNX export and the map of an exported BERT graph."""
