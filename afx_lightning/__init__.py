"""afx-lightning: real, stateful audio plugins as trainable layers (DeepAFx on PyTorch Lightning).

Importing the package is cheap and torch-free on purpose: plugin worker processes import ``afx_lightning.effects``
and must start fast.
"""

__version__ = "0.1.0"
