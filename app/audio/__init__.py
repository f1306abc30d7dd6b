"""Audio in: files (loading) and, later, the microphone; everything ends as float32 mono 16 kHz."""
