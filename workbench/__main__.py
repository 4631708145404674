"""``python -m workbench ...`` (and ``torchrun -m workbench ...``): the same command line as ``workbench``."""

import sys

from workbench.cli.main import main

sys.exit(main())
