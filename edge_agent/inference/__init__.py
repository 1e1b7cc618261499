"""Running a bundle's model: preprocessing as data, then onnxruntime."""
