"""The GUI process: tray, wiring, and later the overlay and settings window (never torch)."""
