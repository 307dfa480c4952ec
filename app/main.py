"""Double-click entry used by packaging: opens the desktop app on the given slide or the bundled demo slide."""
import sys

from gigapath_desktop.cli import main

if __name__ == "__main__":
    sys.exit(main(["gui", *sys.argv[1:]]))
