"""``python -m apexmusic.cli``: the ``apexmusic`` command."""

import sys

from apexmusic.cli import main

sys.exit(main())
