"""The parameter-isolation family by name (merged into ``strategies.STRATEGIES`` by the package)."""

from __future__ import annotations

from .hat import HAT
from .packnet import PackNet
from .pnn import PNN

ISOLATION = {"pnn": PNN, "packnet": PackNet, "hat": HAT}

__all__ = ["ISOLATION"]
