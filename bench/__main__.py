"""`make bench`: python -m bench [--quick] [--runs N] [--seconds S]."""

import sys

from bench.suite import main

sys.exit(main())
