"""The GUI process must never load torch or transformers, not even through a dependency."""

import subprocess
import sys

CODE = """
import sys
import numpy as np
import app.ui.main, app.ui.dictation
from app.audio.vad import has_speech
has_speech(np.zeros(16000, np.float32))
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'silero_vad'))
print(heavy)
"""


def test_gui_modules_stay_torch_free():
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


SERVER_CLIENT_CODE = """
import sys
import app.server.client, app.server.http, app.server.token_store
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'fastapi', 'uvicorn'))
print(heavy)
"""


def test_the_server_client_stays_torch_and_fastapi_free():
    """Engine "server": the app talks HTTP; neither a model nor the server's web framework is loaded."""
    done = subprocess.run([sys.executable, "-c", SERVER_CLIENT_CODE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
