"""Progress bars of the long phases (training epochs, validation, evaluation, the demo's op timing).

One policy for all of them: a tqdm bar on stderr when progress is wanted and stderr is a terminal;
nothing under `mcmri -q` (progress=False) or when stderr is a file or a pipe, where a bar's
carriage-return updates would fill the log.
"""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(enabled: bool, **kwargs) -> tqdm:
    """A tqdm bar (kwargs: total, desc, ...) that shows only when `enabled` and stderr is a terminal;
    a hidden bar's update, set_postfix and close do nothing."""
    shown = enabled and sys.stderr.isatty()
    return tqdm(file=sys.stderr, leave=False, dynamic_ncols=True, disable=not shown, **kwargs)
