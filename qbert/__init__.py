"""qbert: real INT8 quantization of BERT-family encoders for TensorRT and ONNX Runtime."""

__version__ = "0.1.0"
