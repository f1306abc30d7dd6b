"""Training code for the micro diffusion ASR model (a developer tool; the app never imports it)."""
