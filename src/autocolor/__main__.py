import sys

from autocolor.cli import main

sys.exit(main())
