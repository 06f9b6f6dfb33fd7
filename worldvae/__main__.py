import sys

from worldvae.cli.main import main

sys.exit(main())
