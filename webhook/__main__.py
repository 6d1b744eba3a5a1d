"""Entry point: `python -m webhook COMMAND`."""

import sys

from webhook.cli import main

sys.exit(main())
