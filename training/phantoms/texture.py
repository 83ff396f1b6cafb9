"""Power-law (1/f^beta) noise, the standard model of mammographic parenchyma."""

from __future__ import annotations

import numpy as np
from scipy import fft


def power_law_noise(
    shape: tuple[int, int],
    *,
    beta: float,
    rng: np.random.Generator,
    knee: float = 0.0,
) -> np.ndarray:
    """Gaussian noise whose power spectrum falls as 1/f^beta; zero mean, unit std, float32.

    Mammographic texture has beta close to 3 (Burgess et al. 2001): large,
    smooth structures dominate. White noise is shaped in the Fourier domain by
    an amplitude filter (f^2 + knee^2)^(-beta/4), i.e. f^(-beta/2) above the
    ``knee`` frequency (cycles per pixel) and flat below it, so that no
    structure grows much larger than 1/knee pixels. The DC term is dropped.
    """
    if len(shape) != 2 or min(shape) < 2:
        raise ValueError(f"shape must be 2-D with sides >= 2, got {shape}")
    rows, cols = shape
    # Single precision halves the FFT time; the texture does not need more.
    white = rng.standard_normal(shape, dtype=np.float32)
    fy = np.fft.fftfreq(rows).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(cols).astype(np.float32)[None, :]
    freq2 = fy**2 + fx**2 + np.float32(knee**2)
    freq2[0, 0] = 1.0  # placeholder, the DC term is zeroed just below
    amplitude = freq2 ** np.float32(-beta / 4.0)
    amplitude[0, 0] = 0.0
    field = fft.irfft2(fft.rfft2(white, workers=1) * amplitude, s=shape, workers=1)
    field -= field.mean()
    std = field.std()
    return (field / std if std > 0 else field).astype(np.float32, copy=False)
