"""Say whether this Python can run the pack, before anything is installed (the README's first step).

    python3 tools/check_python.py          # exit 0: go on; exit 1: which Python is needed and how to get one

The range is pyproject.toml's ``requires-python`` (read here, so the two cannot disagree): the pinned set in
requirements.txt installs on it (numpy 2.4 and others need 3.11 or newer), and the tests were run on
both ends of it.  Only the standard library is used, written so that even Python 2.7 reads it, so an old
interpreter gets this message rather than a syntax error.
"""
from __future__ import print_function

import io
import os
import re
import sys

PYPROJECT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyproject.toml")


def supported_range(text):
    """(lowest, first unsupported) minor versions from ``requires-python = ">=3.11,<3.14"``."""
    spec = re.search(r'^requires-python\s*=\s*"([^"]+)"', text, re.M).group(1)
    low = re.search(r">=\s*3\.(\d+)", spec)
    high = re.search(r"<\s*3\.(\d+)", spec)
    return (3, int(low.group(1))), (3, int(high.group(1)))


def main():
    low, high = supported_range(io.open(PYPROJECT, encoding="utf-8").read())
    here = sys.version_info[:2]
    last = (high[0], high[1] - 1)
    wanted = "Python {}.{} to {}.{}".format(low[0], low[1], last[0], last[1])
    if low <= here < high:
        print("Python {}.{} ({}): fine, the pack supports {}".format(here[0], here[1], sys.executable, wanted))
        return 0
    print("diffnb needs {}; this is Python {} ({}).\n"
          "Run the README's commands with a supported one, e.g. python3.{} (install it from python.org, your\n"
          "package manager, or `pyenv install 3.{}`): python3.{} tools/check_python.py && python3.{} -m venv .venv ..."
          .format(wanted, sys.version.split()[0], sys.executable, last[1], last[1], last[1], last[1]),
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
