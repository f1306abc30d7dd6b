"""Build the installers for the current OS: `python packaging/build.py [--skip-pyinstaller] [--out DIR]`.

Linux:   dist/dictate/ (PyInstaller onedir), dist/diffusion-dictate-VERSION-linux-ARCH.tar.gz and
         dist/diffusion-dictate_VERSION_ARCH.deb (installs to /opt/diffusion-dictate, /usr/bin/dictate).
Windows: dist/dictate/ and, when Inno Setup's iscc is on PATH, dist/diffusion-dictate-VERSION-setup.exe.  (untested)
macOS:   dist/Diffusion Dictate.app and dist/diffusion-dictate-VERSION-macos.dmg (hdiutil).            (untested)

PyInstaller is installed into the running interpreter when missing (the `packaging` extra). The
bundle contains whatever torch this interpreter has: the CPU build by default, see docs/packaging.md
for the CUDA one. Prints one JSON line at the end with the outputs, their sizes and the build time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
APP_ID = "diffusion-dictate"
DISPLAY_NAME = "Diffusion Dictate"
# Runtime libraries the Linux bundle expects from the system (Qt's xcb platform plugin, audio, fonts).
# PortAudio is bundled too, but the system copy is the fallback and matches the system's ALSA setup.
DEB_DEPENDS = [
    "libportaudio2", "libsndfile1", "libxcb-icccm4", "libxcb-keysyms1", "libxcb-cursor0", "libxcb-image0",
    "libxcb-randr0", "libxcb-render-util0", "libxcb-shape0", "libxcb-xinerama0", "libxcb-xkb1",
    "libxkbcommon-x11-0", "libegl1", "libgl1", "libfontconfig1", "libdbus-1-3", "libglib2.0-0",
]


def version() -> str:
    for line in (ROOT / "pyproject.toml").read_text().splitlines():
        if line.startswith("version"):
            return line.split("=", 1)[1].strip().strip('"')
    return "0.0.0"


def ensure_pyinstaller() -> None:
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        print("Installing PyInstaller (the `packaging` extra) ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "pyinstaller>=6.11"], check=True)


def render_icons(out: Path) -> None:
    """PNG (Linux, macOS) and ICO (Windows) of resources/icons/idle.svg, drawn with Qt (no extra tools)."""
    out.mkdir(parents=True, exist_ok=True)
    code = r"""
import sys
from pathlib import Path
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer
app = QGuiApplication([])
renderer = QSvgRenderer(sys.argv[1])
out = Path(sys.argv[2])
for size in (256, 48):
    image = QImage(size, size, QImage.Format_ARGB32)
    image.fill(Qt.transparent)
    painter = QPainter(image)
    renderer.render(painter)
    painter.end()
    name = "dictate.png" if size == 256 else f"dictate-{size}.png"
    assert image.save(str(out / name)), name
    if size == 256 and not image.save(str(out / "dictate.ico"), "ICO"):
        print("no ICO writer in this Qt; Windows builds need packaging/windows/dictate.ico", file=sys.stderr)
"""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    subprocess.run([sys.executable, "-c", code, str(ROOT / "resources" / "icons" / "idle.svg"), str(out)],
                   check=True, env=env)
    if sys.platform == "darwin" and shutil.which("iconutil"):
        iconset = out / "dictate.iconset"
        iconset.mkdir(exist_ok=True)
        for size in (16, 32, 128, 256, 512):
            for scale in (1, 2):
                name = f"icon_{size}x{size}{'@2x' if scale == 2 else ''}.png"
                subprocess.run(["sips", "-z", str(size * scale), str(size * scale), str(out / "dictate.png"),
                                "--out", str(iconset / name)], check=True, capture_output=True)
        subprocess.run(["iconutil", "-c", "icns", str(iconset), "-o", str(out / "dictate.icns")], check=True)


def run_pyinstaller(dist: Path, work: Path, icons: Path) -> float:
    started = time.monotonic()
    env = {**os.environ, "DICTATE_ICON_DIR": str(icons), "DICTATE_VERSION": version()}
    subprocess.run([sys.executable, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN",
                    "--distpath", str(dist), "--workpath", str(work), str(PACKAGING / "dictate.spec")],
                   check=True, env=env, cwd=ROOT)
    return time.monotonic() - started


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def deb_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def linux_packages(dist: Path, icons: Path) -> dict[str, Path]:
    bundle = dist / "dictate"
    ver = version()
    tar_path = dist / f"{APP_ID}-{ver}-linux-{platform.machine()}.tar.gz"
    with tarfile.open(tar_path, "w:gz", compresslevel=6) as tar:
        tar.add(bundle, arcname=f"{APP_ID}-{ver}")

    root = dist / "deb-root"
    shutil.rmtree(root, ignore_errors=True)
    opt = root / "opt" / APP_ID
    shutil.copytree(bundle, opt, symlinks=True)
    (root / "usr" / "bin").mkdir(parents=True)
    os.symlink(f"/opt/{APP_ID}/dictate", root / "usr" / "bin" / "dictate")
    apps = root / "usr" / "share" / "applications"
    apps.mkdir(parents=True)
    desktop = (PACKAGING / "linux" / "diffusion-dictate.desktop").read_text()
    (apps / f"{APP_ID}.desktop").write_text(desktop)
    for size, name in ((256, "dictate.png"), (48, "dictate-48.png")):
        icon_dir = root / "usr" / "share" / "icons" / "hicolor" / f"{size}x{size}" / "apps"
        icon_dir.mkdir(parents=True)
        shutil.copy(icons / name, icon_dir / f"{APP_ID}.png")
    svg_dir = root / "usr" / "share" / "icons" / "hicolor" / "scalable" / "apps"
    svg_dir.mkdir(parents=True)
    shutil.copy(ROOT / "resources" / "icons" / "idle.svg", svg_dir / f"{APP_ID}.svg")
    debian = root / "DEBIAN"
    debian.mkdir()
    installed_kb = dir_size(root) // 1024
    (debian / "control").write_text(
        f"Package: {APP_ID}\nVersion: {ver}\nSection: utils\nPriority: optional\nArchitecture: {deb_arch()}\n"
        f"Maintainer: Diffusion Dictate developers <noreply@diffusion-dictate.invalid>\n"
        f"Installed-Size: {installed_kb}\nDepends: {', '.join(DEB_DEPENDS)}\n"
        f"Recommends: xclip | wl-clipboard, xdotool\n"
        f"Description: hold a hotkey, speak, release: the words appear in the focused window\n"
        f" Local speech recognition (Whisper and diffusion models) in a system-tray app.\n"
        f" Bundled Python runtime, PyTorch (CPU) and Qt; installs to /opt/{APP_ID}.\n")
    deb_path = dist / f"{APP_ID}_{ver}_{deb_arch()}.deb"
    # -Zgzip: fast and universally readable; --root-owner-group: files owned by root without fakeroot.
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb_path)], check=True,
                   stdout=subprocess.DEVNULL)
    shutil.rmtree(root)
    return {"bundle": bundle, "tar.gz": tar_path, "deb": deb_path}


def windows_packages(dist: Path) -> dict[str, Path]:  # untested: no Windows machine in CI
    out = {"bundle": dist / "dictate"}
    iscc = shutil.which("iscc") or shutil.which("ISCC")
    default = Path(os.environ.get("ProgramFiles(x86)", r"C:\Program Files (x86)")) / "Inno Setup 6" / "ISCC.exe"
    if iscc is None and default.exists():
        iscc = str(default)
    if iscc is None:
        print("Inno Setup (iscc) not found: skipped the installer; the bundle is in dist/dictate", file=sys.stderr)
        return out
    subprocess.run([iscc, f"/DAppVersion={version()}", f"/DDistDir={dist}", f"/DIconFile={ROOT / 'build' / 'icons' / 'dictate.ico'}",
                    f"/O{dist}", str(PACKAGING / "windows" / "dictate.iss")], check=True)
    out["installer"] = dist / f"{APP_ID}-{version()}-setup.exe"
    return out


def macos_packages(dist: Path) -> dict[str, Path]:  # untested: no Mac in CI
    app = dist / f"{DISPLAY_NAME}.app"
    dmg = dist / f"{APP_ID}-{version()}-macos.dmg"
    dmg.unlink(missing_ok=True)
    staging = dist / "dmg-root"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    subprocess.run(["ditto", str(app), str(staging / app.name)], check=True)
    os.symlink("/Applications", staging / "Applications")
    subprocess.run(["hdiutil", "create", "-volname", DISPLAY_NAME, "-srcfolder", str(staging), "-ov", "-format", "UDZO",
                    str(dmg)], check=True)
    shutil.rmtree(staging)
    return {"app": app, "dmg": dmg}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder (default: dist/)")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "pyinstaller", help="PyInstaller's work folder")
    parser.add_argument("--skip-pyinstaller", action="store_true", help="reuse the bundle already in --out")
    args = parser.parse_args(argv)
    dist, icons = args.out.resolve(), (ROOT / "build" / "icons")
    ensure_pyinstaller()
    render_icons(icons)
    pyinstaller_s = 0.0 if args.skip_pyinstaller else run_pyinstaller(dist, args.work.resolve(), icons)
    started = time.monotonic()
    if sys.platform.startswith("linux"):
        outputs = linux_packages(dist, icons)
    elif sys.platform == "win32":
        outputs = windows_packages(dist)
    elif sys.platform == "darwin":
        outputs = macos_packages(dist)
    else:
        raise SystemExit(f"no installer recipe for {sys.platform}")
    sizes = {k: (dir_size(p) if p.is_dir() else p.stat().st_size) for k, p in outputs.items()}
    print(json.dumps({"outputs": {k: str(p) for k, p in outputs.items()}, "bytes": sizes,
                      "pyinstaller_s": round(pyinstaller_s, 1), "packaging_s": round(time.monotonic() - started, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
