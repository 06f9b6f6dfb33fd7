"""``python -m worldvae``: the command line, which lives on the top floor (``agents.cli``)."""

import sys

from agents.cli.main import main

sys.exit(main())
