"""Another program holding a hotkey: grabs COMBO's key with its modifiers on the root window and waits.

Run: python -m tests.desktop.key_blocker KEYSYM MODIFIER-MASK   (prints "grabbed" once it holds it)
"""

import sys
import time

from Xlib import XK, X, display


def main() -> None:
    dpy = display.Display()
    keycode = dpy.keysym_to_keycode(XK.string_to_keysym(sys.argv[1]))
    dpy.screen().root.grab_key(keycode, int(sys.argv[2]), False, X.GrabModeAsync, X.GrabModeAsync)
    dpy.sync()
    print("grabbed", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
