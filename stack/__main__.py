"""Lets the stack tooling run as ``python -m stack <command>`` (see stack.cli)."""

import sys

from stack.cli import main

sys.exit(main())
