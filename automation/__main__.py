import sys

from automation.ops.cli import main

sys.exit(main())
