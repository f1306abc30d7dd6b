# PyInstaller runtime hook: let sounddevice find the PortAudio library bundled beside the executable.
# On Linux sounddevice asks ctypes.util.find_library("portaudio"), which only looks at the system
# (ldconfig), so a bundle would silently depend on libportaudio2 being installed. Prefer the bundled
# copy; fall back to the system one when the bundle has none.
import ctypes.util
import os
import sys

_original_find_library = ctypes.util.find_library


def _find_library(name):
    if name == "portaudio":
        base = getattr(sys, "_MEIPASS", os.path.dirname(sys.executable))
        for candidate in ("libportaudio.so.2", "libportaudio.so"):
            path = os.path.join(base, candidate)
            if os.path.exists(path):
                return path
    return _original_find_library(name)


if sys.platform.startswith("linux"):
    ctypes.util.find_library = _find_library
