"""Diffusion Dictate: hold a hotkey, speak, release, and the words appear in the focused window."""

__version__ = "0.1.0"
