"""Machine learning code of the model pipeline. Modules here import torch/TensorFlow lazily or are only
imported inside steps."""
