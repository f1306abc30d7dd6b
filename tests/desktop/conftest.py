"""Session fixtures: one X11 desktop, one running app with the Whisper tiny.en worker, the targets.

Only a missing Xvfb skips these tests; anything else missing is a failure that says how to fix it.
Logs and a screenshot are kept under tests/.artifacts/desktop/ for a look after a failure.
"""

import json
import shutil

import pytest

from tests.data import DATA_DIR, MANIFEST, WHISPER_TINY_EN
from tests.desktop.harness import App, GtkEditor, PlainTerminal, Target, Terminal, XSession, missing_tools

ARTIFACTS = DATA_DIR.parent / ".artifacts" / "desktop"
HOTKEY = "ctrl+shift+space"  # the app's default <ctrl>+<shift>+<space>, as xdotool and real_keyboard.py spell it
# The usual release order; test_hotkey_grab.py tries the others.
HOTKEY_UP = "space+shift+ctrl"
APP_SETTINGS = {"model": str(WHISPER_TINY_EN), "device": "cpu", "language": "en", "mode": "hybrid"}


@pytest.fixture(scope="session")
def x_session(tmp_path_factory):
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (Debian: apt install xvfb), and these tests need a real X server")
    missing = missing_tools()
    assert not missing, f"missing desktop test tools {missing}: run `packaging/setup.sh deps`"
    workdir = tmp_path_factory.mktemp("desktop")
    session = XSession(workdir).start()
    yield session
    session.stop()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for log in workdir.glob("*.log"):
        shutil.copy(log, ARTIFACTS / log.name)


@pytest.fixture(scope="session")
def clips():
    assert MANIFEST.exists() and WHISPER_TINY_EN.exists(), "test data missing: run `python -m tests.data.build`"
    return {c["id"]: {**c, "path": DATA_DIR / c["path"]} for c in json.loads(MANIFEST.read_text())["clips"]}


@pytest.fixture(scope="session")
def target(x_session):
    return Target(x_session, x_session.workdir)


@pytest.fixture(scope="session")
def gtk_editor(x_session):
    return GtkEditor(x_session, x_session.workdir)


@pytest.fixture(scope="session")
def plain_terminal(x_session):
    return PlainTerminal(x_session, x_session.workdir)


@pytest.fixture(scope="session")
def terminal(x_session):
    return Terminal(x_session, x_session.workdir)


def start_app(session: XSession, workdir, settings: dict) -> App:
    """Start an app instance and wait until its worker and hotkeys are ready (its log on failure)."""
    app = App(session, workdir, settings)
    app.start()
    try:
        app.wait_ready()
    except AssertionError as exc:
        app.stop()
        raise AssertionError(f"{exc}\n--- app log ---\n{app.log()[-4000:]}") from None
    return app


@pytest.fixture(scope="session")
def dictation_app(x_session, clips, target):
    app = start_app(x_session, x_session.workdir, APP_SETTINGS)
    yield app
    app.stop()
