"""Desktop end-to-end tests: a real X11 session (Xvfb + openbox + trayer), the real app and worker."""
