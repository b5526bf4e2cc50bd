"""`python -m indexer`: see indexer/cli.py."""

import sys

from indexer.cli import main

if __name__ == "__main__":  # decode workers are spawned and import this module as __mp_main__
    sys.exit(main())
