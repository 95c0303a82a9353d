"""The distillation and replay family by name (merged into ``strategies.STRATEGIES`` by the package)."""

from __future__ import annotations

from .bic import BiC
from .der import DER, DERpp
from .dgr import DGR
from .distill import LwF
from .er_ace import ERACE
from .gdumb import GDumb
from .gem import GEM
from .icarl import ICaRL
from .lucir import LUCIR
from .mir import MIR
from .replay import AGEM, ER
from .xder import XDER

REPLAY = {
    "lwf": LwF,
    "er": ER,
    "agem": AGEM,
    "gem": GEM,
    "icarl": ICaRL,
    "bic": BiC,
    "dgr": DGR,
    "der": DER,
    "derpp": DERpp,
    "xder": XDER,
    "er-ace": ERACE,
    "gdumb": GDumb,
    "mir": MIR,
    "lucir": LUCIR,
}

__all__ = ["REPLAY"]
