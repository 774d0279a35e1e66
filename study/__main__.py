"""`python -m study` is the same as the `insgd-study` console script."""

import sys

from study.cli import main

sys.exit(main())
