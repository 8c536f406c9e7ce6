"""sentiment-mlops: train, version, serve and monitor a text sentiment classifier."""

__version__ = "0.1.0"
