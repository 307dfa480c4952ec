"""`python -m gigapath_desktop` runs the command line (no subcommand opens the app)."""
import sys

from gigapath_desktop.cli import main

sys.exit(main())
