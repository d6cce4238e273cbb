"""xmtc: extreme multilabel text classification with Lightning, and its adversarial robustness."""

__version__ = "0.1.0"
