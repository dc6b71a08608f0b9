"""`python -m mcmri_fast`: the command line (see mcmri_fast.cli)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
