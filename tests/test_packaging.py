"""The Linux installer, built and smoke-tested: `pytest -m packaging tests/test_packaging.py`.

One PyInstaller build per session (several minutes on 2 cores), kept under build/packaging-test/
and reused while its inputs are unchanged: the packaging files, the app's sources and resources,
and the versions of every installed distribution. Then the bundle, as a user would run it:
  - the tray app starts under a real X11 desktop (Xvfb + openbox + trayer from tests/desktop),
    docks its icon in trayer, starts the *bundled* worker and loads Whisper tiny.en, without torch;
  - `dictate worker` speaks the framing protocol and says hello;
  - `dictate transcribe` turns real speech into the right words;
  - the .deb unpacks to /opt/diffusion-dictate with /usr/bin/dictate, a .desktop file, an icon and
    the Debian dependencies; the .tar.gz holds the same bundle.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.worker.protocol import PROTOCOL_VERSION, Frame, FrameDecoder, encode
from tests.data import DATA_DIR, MANIFEST, WHISPER_TINY_EN
from tests.desktop.harness import App, XSession, missing_tools, wait_for

pytestmark = [pytest.mark.packaging, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux build only")]

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "packaging-test"
ARTIFACTS = ROOT / "tests" / ".artifacts" / "packaging"
MAX_WER = 0.35


def _inputs_key() -> str:
    """A hash of everything that changes the bundle; a changed input means a fresh build."""
    h = hashlib.sha256()
    files = [ROOT / "pyproject.toml"]
    for folder, pattern in (("packaging", "*"), ("app", "*.py"), ("resources", "*")):
        files += sorted(p for p in (ROOT / folder).rglob(pattern) if p.is_file() and "__pycache__" not in p.parts)
    for path in files:
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    dists = sorted(f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions())
    h.update("\n".join(dists).encode() + sys.version.encode())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def build():
    """{"outputs": {bundle, tar.gz, deb}, "bytes": ..., "pyinstaller_s": ...} of a build of the current tree."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    key = _inputs_key()
    out = CACHE / key
    record = out / "build.json"
    if record.exists():
        result = json.loads(record.read_text())
        if all(Path(p).exists() for p in result["outputs"].values()):
            return result
    if CACHE.exists():  # one build kept: the bundle is ~1 GB
        for old in CACHE.iterdir():
            shutil.rmtree(old, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(ROOT / "packaging" / "build.py"), "--out", str(out / "dist"),
                           "--work", str(CACHE / "work")], capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, f"packaging/build.py failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["build_s"] = round(time.monotonic() - started, 1)
    shutil.rmtree(CACHE / "work", ignore_errors=True)
    record.write_text(json.dumps(result, indent=1))
    return result


@pytest.fixture(scope="session")
def bundle(build) -> Path:
    return Path(build["outputs"]["bundle"])


@pytest.fixture(scope="session")
def exe(bundle) -> Path:
    return bundle / "dictate"


def test_bundle_has_what_it_needs_and_not_more(bundle, exe, build):
    internal = bundle / "_internal"
    assert os.access(exe, os.X_OK)
    assert (internal / "resources" / "icons" / "idle.svg").is_file()
    assert (internal / "resources" / "sounds" / "start.wav").is_file()
    assert (internal / "silero_vad" / "data" / "silero_vad.onnx").is_file()
    assert (internal / "libportaudio.so.2").is_file(), "PortAudio should be bundled"
    assert list((internal / "onnxruntime").rglob("*onnxruntime*.so*")), "onnxruntime's native library"
    # Wayland's clipboard (app/desktop/wayland_clipboard.py): pywayland's cffi module and the libwayland-client it links
    assert list((internal / "pywayland").glob("_ffi*.so")), "pywayland's native module"
    assert list(internal.rglob("libwayland-client*.so*")), "the libwayland-client pywayland loads"
    assert not (internal / "tensorboard").exists() and not (internal / "torchvision").exists()
    assert build["bytes"]["bundle"] < 3 * 1024**3, "a CPU bundle should stay well under 3 GB"


def test_bundled_worker_says_hello(exe):
    proc = subprocess.Popen([str(exe), "worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        decoder, hello = FrameDecoder(peer="worker"), None
        deadline = time.monotonic() + 120
        while hello is None and time.monotonic() < deadline:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            hello = next((e for e in decoder.feed(chunk) if isinstance(e, Frame) and e.type == "hello"), None)
        assert hello is not None, f"no hello from the bundled worker:\n{proc.stderr.read1(20000).decode(errors='replace') if proc.poll() is not None else ''}"
        assert hello["protocol"] == PROTOCOL_VERSION and hello["loaded"] is False
        proc.stdin.write(encode("shutdown"))
        proc.stdin.flush()
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bundle_transcribes_real_speech(exe):
    from tests.speech import wer

    assert MANIFEST.exists() and WHISPER_TINY_EN.exists(), "test data missing: run `python -m tests.data.build`"
    clip = next(c for c in json.loads(MANIFEST.read_text())["clips"] if c["id"] == "librivox-0880")
    done = subprocess.run([str(exe), "transcribe", str(DATA_DIR / clip["path"]), "--model", str(WHISPER_TINY_EN),
                           "--device", "cpu", "--language", "en", "--json"],
                          capture_output=True, text=True, timeout=600, cwd="/")
    assert done.returncode == 0, done.stderr[-4000:]
    text = json.loads(done.stdout.strip().splitlines()[-1])["text"]
    assert wer([clip["text"]], [text]) <= MAX_WER, text


class BundledApp(App):
    """tests/desktop's App, started from the bundle instead of `python -m app`."""

    def __init__(self, session, workdir, settings, exe: Path) -> None:
        super().__init__(session, workdir, settings)
        self.exe = exe

    def start(self) -> float:
        self.started_at = time.monotonic()
        self.proc = self.session.spawn([str(self.exe)], "app", env=self.env, log=self.log_path)
        wait_for(lambda: self.status() or self.proc.poll() is not None, "the bundled app to answer", timeout=120)
        assert self.proc.poll() is None, f"the bundled app exited early:\n{self.log()}"
        return time.monotonic() - self.started_at


def _docked_pids(session: XSession) -> set[int]:
    """Process ids (_NET_WM_PID) of the windows embedded in trayer's "panel", read from `xwininfo -root -tree`."""
    pids, panel_indent = set(), None
    for line in session.run("xwininfo", "-root", "-tree").splitlines():
        indent = len(line) - len(line.lstrip())
        if '("panel" "trayer")' in line:
            panel_indent = indent
            continue
        if panel_indent is None or not line.strip():
            continue
        if indent <= panel_indent:
            break
        match = re.match(r"\s*(0x[0-9a-f]+) .*\(\"[^\"]*\" \"[^\"]*\"\)", line)
        if match:
            pid = re.search(r"= (\d+)", session.run("xprop", "-id", match.group(1), "_NET_WM_PID"))
            if pid:
                pids.add(int(pid.group(1)))
    return pids


def test_tray_app_from_the_bundle_docks_and_starts_the_bundled_worker(exe, tmp_path):
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (Debian: apt install xvfb)")
    assert not missing_tools(), f"missing desktop test tools {missing_tools()}: run `packaging/setup.sh deps`"
    from tests.desktop.conftest import APP_SETTINGS

    session = XSession(tmp_path).start()
    app = BundledApp(session, tmp_path, APP_SETTINGS, exe)
    try:
        answered = app.start()
        wait_for(lambda: app.status()["tray"], "the tray icon to be visible", timeout=60)
        # The icon really is docked: trayer holds a child window that belongs to the app.
        wait_for(lambda: app.proc.pid in _docked_pids(session), "the app's icon window inside trayer", timeout=30)
        status = app.wait_ready()
        assert status["worker"] == "ready"
        worker_cmdline = Path(f"/proc/{status['worker_pid']}/cmdline").read_bytes().split(b"\0")
        assert worker_cmdline[0] == os.fsencode(exe) and worker_cmdline[1] == b"worker", worker_cmdline
        assert not app.maps_torch(), "the GUI process of the bundle must not load torch"
        (ARTIFACTS).mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "startup.json").write_text(json.dumps({"answered_s": round(answered, 2),
                                                            "rss_mb": round(app.rss_mb())}))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- app log ---\n{app.log()[-4000:]}") from None
    finally:
        app.stop()
        session.stop()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for log in tmp_path.glob("*.log"):
            shutil.copy(log, ARTIFACTS / log.name)


def test_deb_installs_the_right_files(build, tmp_path):
    deb = Path(build["outputs"]["deb"])
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    assert os.access(root / "opt" / "diffusion-dictate" / "dictate", os.X_OK)
    assert os.readlink(root / "usr" / "bin" / "dictate") == "/opt/diffusion-dictate/dictate"
    desktop = (root / "usr" / "share" / "applications" / "diffusion-dictate.desktop").read_text()
    assert "Exec=/usr/bin/dictate" in desktop and "Icon=diffusion-dictate" in desktop
    assert (root / "usr" / "share" / "icons" / "hicolor" / "256x256" / "apps" / "diffusion-dictate.png").stat().st_size > 0
    depends = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], capture_output=True, text=True, check=True).stdout
    for package in ("libportaudio2", "libxcb-icccm4", "libxcb-cursor0", "libxkbcommon-x11-0"):
        assert package in depends
    if shutil.which("desktop-file-validate"):
        subprocess.run(["desktop-file-validate", str(root / "usr/share/applications/diffusion-dictate.desktop")], check=True)


def test_tarball_holds_the_bundle(build):
    import tarfile

    with tarfile.open(build["outputs"]["tar.gz"]) as tar:
        names = set(tar.getnames())
    top = next(iter(names)).split("/")[0]
    assert f"{top}/dictate" in names and f"{top}/_internal/libportaudio.so.2" in names
