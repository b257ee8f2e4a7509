"""The DeepAFx method's numbers (paper + its official code), in one place; defaults elsewhere refer to these.

Martínez Ramírez, Wang, Smaragdis, Bryan, "Differentiable signal processing with black-box audio effects",
ICASSP 2021. Imports nothing (the torch-free worker processes may use it).
"""

from __future__ import annotations

#: Audio rate the paper trains and evaluates at (Hz).
SAMPLE_RATE = 22050
#: Samples per frame: the encoder predicts one θ per frame and the plugins render one block of this length.
FRAME_SIZE = 1024
#: Encoder context (samples) around each frame: 19 968 before it and 20 992 after it (the frame in between).
CONTEXT_SIZE = 40960
#: SPSA perturbation size in normalised parameter units (official code).
SPSA_EPSILON = 0.01
#: Log-mel front end and d_MFCC analysis: FFT size, hop, mel bands; d_MFCC uses this many coefficients.
N_FFT = 1024
HOP_LENGTH = 256
N_MELS = 128
N_MFCC = 13
#: Largest delay (samples) the time-domain loss aligns by (official code: 0 < shift < 100).
LOSS_MAX_SHIFT = 100
#: Low-pass cutoff (Hz) of the predicted parameter curves at inference (zero-phase; 0 turns it off).
PREDICT_SMOOTHING_HZ = 2.0
