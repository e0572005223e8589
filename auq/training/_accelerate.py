"""Accelerate set-up shared by auq's trainers."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def respect_precision(accelerator: Any, requested: str) -> None:
    """Make ``accelerator`` run in the precision its trainer asked for, whatever ran before it.

    Accelerate keeps one process-wide state: after a trainer that initialised it with
    ``mixed_precision="bf16"`` (TRL's configs turn bf16 on by default), every later ``Accelerator``
    inherits bf16 autocast, so an auq trainer configured for float32 would silently train and
    evaluate under bf16 (rewards differing by ~1e-2 from the float32 ones). When ``requested`` is
    ``"no"`` this turns the instance's native AMP off, so neither ``prepare(model)`` nor
    ``accelerator.autocast()`` casts (``accelerator.mixed_precision`` still names the process
    state). Asking for bf16/fp16 where another precision is set already makes ``Accelerator(...)``
    itself raise a ``ValueError`` (accelerate 1.15); other versions may accept it, which is logged.
    """
    state = accelerator.mixed_precision
    if state == requested:
        return
    if requested == "no":
        accelerator.native_amp = False
        logger.info("Accelerate was initialised with mixed_precision=%r in this process; this trainer runs in float32 as configured", state)
        return
    logger.warning(
        "Accelerate was already initialised with mixed_precision=%r in this process; this trainer's "
        "%r cannot override it (restart the process to change it)", state, requested,
    )
