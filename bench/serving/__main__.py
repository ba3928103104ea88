"""`python -m bench.serving`: see the package's docstring."""

import sys

from bench.serving.cli import main

sys.exit(main())
