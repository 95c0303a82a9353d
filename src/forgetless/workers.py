"""How grid workers start, kept free of torch so that the fork server can be started before anything
heavy is imported here (it then imports torch and forgetless on the other core while this process
does the same).

Workers start with ``forkserver`` where available: a server process that imported forgetless and
torch once forks each worker (fast, and safe since the server runs no threads); ``spawn`` elsewhere.
``$FORGETLESS_START_METHOD`` overrides.
"""

from __future__ import annotations

import os

from .errors import UsageError

# imported once by the fork server, so that a worker starts in a fraction of a second: torch's optimizers
# import torch._dynamo on their first step (1.3 s). (scikit-learn is not imported: the digits are read from
# its CSV file directly, see data/digits.py; preloading it cost 1.7 s before the first run could start.)
PRELOAD = ["forgetless.run", "forgetless.experiment", "torch._dynamo"]


def start_method() -> str:
    """``forkserver`` where available, else ``spawn``; ``$FORGETLESS_START_METHOD`` overrides."""
    import multiprocessing as mp

    methods = mp.get_all_start_methods()
    wanted = os.environ.get("FORGETLESS_START_METHOD")
    if wanted:
        if wanted not in methods:
            raise UsageError(f"FORGETLESS_START_METHOD={wanted!r}: choose one of {', '.join(methods)}")
        return wanted
    return "forkserver" if "forkserver" in methods else "spawn"


def context():
    """The multiprocessing context grid workers start from (the fork server told what to preload)."""
    import multiprocessing as mp

    method = start_method()
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(PRELOAD)
    return ctx


def start_early() -> None:
    """Start the fork server now (it preloads in the background), before this process imports torch:
    the two imports then run side by side. Does nothing where workers do not start from a fork server."""
    if start_method() != "forkserver":
        return
    context()
    from multiprocessing import forkserver

    forkserver.ensure_running()
