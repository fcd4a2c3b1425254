"""This process's connection to Ray, shared by everything in it that uses Ray.

`RayDetector` and sweeps on Ray (`espdetect.profiling.ray_sweep`) may run in one process (a
notebook, a test run): each `connect` is counted and the connection made here ends with the
last `release`; one that existed before (a user's own ``ray.init``) is left open.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import ray

from espdetect.exceptions import ConfigurationError

__all__ = ["connect", "release"]

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_users = 0
_made_here = False


def connect(address: str | None) -> None:
    """Join Ray at ``address``, counted; pair each call with `release`.

    ``"local"`` starts a new Ray inside this process; ``"auto"`` joins the cluster this machine
    is part of (``ray start``); ``"HOST:PORT"`` a head node, ``"ray://HOST:PORT"`` through Ray
    Client; None: Ray's own default (``RAY_ADDRESS``, else a cluster on this machine, else a new
    local one). A process already connected keeps its connection, whatever ``address`` says.

    Raises:
        ConfigurationError: no Ray cluster answers at ``address`` (``field="ray_address"``).

    Example:
        >>> connect("auto")  # doctest: +SKIP
        >>> release()  # doctest: +SKIP
    """
    global _users, _made_here
    with _lock:
        if _users == 0 and not ray.is_initialized():
            kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
            if address == "local":
                kwargs["include_dashboard"] = False
            # ray.init makes SIGTERM exit at once (status 15); a server has its own graceful stop.
            on_sigterm = signal.getsignal(signal.SIGTERM)
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ConfigurationError(
                    f"expected a reachable Ray cluster at ray_address={address!r}, got {first_line(exc)}",
                    field="ray_address",
                ) from exc
            finally:
                if threading.current_thread() is threading.main_thread():
                    signal.signal(signal.SIGTERM, on_sigterm)
            _made_here = True
        elif _users == 0 and address is not None:
            logger.info("ray_address=%r: using this process's existing Ray connection", address)
        _users += 1


def release() -> None:
    """End one `connect`; the last one closes a connection that `connect` made."""
    global _users, _made_here
    with _lock:
        _users = max(0, _users - 1)
        if _users == 0 and _made_here:
            _made_here = False
            ray.shutdown()


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (Ray's carry whole tracebacks)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
