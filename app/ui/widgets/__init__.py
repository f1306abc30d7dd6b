"""Small custom widgets for the settings window and the overlay: the fields that need more than a plain editor."""
