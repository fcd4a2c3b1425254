"""Detection on a Ray Serve deployment shared by many servers (``pip install espdetect[ray]``).

`RayDetector` is a `espdetect.detectors.Detector` whose model runs in the replicas of a Ray
Serve application (`espdetect.ray.deployment`); the server uses it with ``backend = "ray"``.
Importing this package without Ray installed raises `ConfigurationError` saying what to install.

Example:
    >>> from espdetect.ray import RayDetector, RayOptions  # doctest: +SKIP
    >>> detector = RayDetector(options=RayOptions(address="auto", replicas=2))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util

from espdetect.exceptions import ConfigurationError

if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.serve") is None:
    raise ConfigurationError(
        "expected Ray Serve for backend 'ray' and Ray sweeps: pip install 'espdetect[ray]'", field="backend"
    )

from espdetect.ray.detector import RayDetector, RayOptions

__all__ = ["RayDetector", "RayOptions"]
