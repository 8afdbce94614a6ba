"""``python -m jaxlens.export RUN_DIR OUT_DIR [key=value ...]`` (see :mod:`jaxlens.export.cli`)."""

import sys

from jaxlens.export.cli import main

if __name__ == "__main__":
  sys.exit(main())
