"""EmoTorch: facial-emotion recognition served by Triton, turned into mood-aware recommendations."""

__version__ = "0.1.0"
