"""The desktop side: global hotkeys, the single-instance remote channel, clipboard and paste."""
