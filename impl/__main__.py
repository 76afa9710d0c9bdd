import sys

from flk.impl.cli import main

sys.exit(main())
