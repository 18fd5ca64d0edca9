"""KServe custom predictor for PyTorch image classifiers."""

__version__ = "0.1.0"
