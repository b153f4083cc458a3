"""``python -m jaxvision`` is the ``jaxvision`` command."""

import sys

from jaxvision.cli import main

sys.exit(main())
