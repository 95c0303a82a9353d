"""The regularization family by name (merged into ``strategies.STRATEGIES`` by the package)."""

from __future__ import annotations

from .regularization import EWC, L2, MAS, SCP, SI, OnlineEWC, RWalk

REGULARIZATION = {"l2": L2, "ewc": EWC, "online-ewc": OnlineEWC, "si": SI, "mas": MAS, "rwalk": RWalk, "scp": SCP}

__all__ = ["REGULARIZATION"]
