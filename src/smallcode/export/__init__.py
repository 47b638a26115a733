"""Exports of a smallcode model to other runtimes (Hugging Face, ONNX)."""
