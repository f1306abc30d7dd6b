"""The frozen executable's entry point: `dictate` is the tray app, `dictate worker` the speech worker.

Everything goes through app.cli.main, so the bundle takes the same arguments as `python -m app`
(`transcribe`, `check-model`, `toggle`, ...). The GUI path never imports torch, and a PyInstaller
bundle only loads the modules a process imports, so the tray app starts as fast as from source.
"""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()  # harmless; keeps any library that spawns processes from re-running the GUI
    from app.cli import main

    sys.exit(main())
