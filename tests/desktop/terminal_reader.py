"""Runs inside xterm: puts the tty in raw mode and appends every byte it receives to a file.

Raw mode, so a paste without a newline arrives at once; no bracketed-paste mode is requested, so
the pasted text arrives as is.
Run: python -m tests.desktop.terminal_reader OUTFILE
"""

import os
import sys
import tty


def main() -> None:
    tty.setraw(0)
    with open(sys.argv[1], "ab", buffering=0) as out:
        while True:
            data = os.read(0, 4096)
            if not data:
                break
            out.write(data)


if __name__ == "__main__":
    main()
