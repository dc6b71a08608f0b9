"""`python -m mcmri_fast`: the command line (see mcmri_fast.workflows.cli)."""
import sys

from .workflows.cli import main

if __name__ == "__main__":
    sys.exit(main())
