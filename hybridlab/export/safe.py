"""Writing export files without ever leaving the export folder.

* ``safe_component(text)`` turns a name from the database (a study name like ``../../x``) into
  one harmless path component: letters, digits, ``_ . -`` only, no leading dots, never empty.
* ``ExportDir(path)`` creates the folder and writes plain files *directly inside it*: a name
  with a separator or ``..`` is refused, and every file is written to a fresh temporary file in
  the folder and moved into place with ``os.replace`` -- so an existing symlink named like an
  export file is replaced, never followed.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_component(text: str, default: str = "export", max_len: int = 80) -> str:
    """One path component made from arbitrary text (``../../x`` -> ``x``)."""
    name = _UNSAFE.sub("_", str(text)).strip("._-")
    name = re.sub(r"\.{2,}", ".", name)[:max_len].strip("._-")
    return name or default


class UnsafePath(ValueError):
    pass


class ExportDir:
    """A folder that export files go into, and nowhere else."""

    def __init__(self, path: str | os.PathLike):
        path = Path(path).expanduser()
        if path.is_symlink():
            raise UnsafePath(f"{path} is a symlink; give a real folder to export into")
        path.mkdir(parents=True, exist_ok=True)
        self.path = path.resolve()

    def target(self, name: str) -> Path:
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name \
                or name != os.path.basename(name):
            raise UnsafePath(f"refusing to write {name!r}: export files are plain names")
        target = self.path / name
        if target.parent.resolve() != self.path:
            raise UnsafePath(f"refusing to write {name!r} outside {self.path}")
        return target

    def _tmp(self, name: str) -> str:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.path)
        os.close(fd)
        os.chmod(tmp, 0o644)          # mkstemp makes 0600; exports are meant to be shared
        return tmp

    def write_text(self, name: str, text: str) -> Path:
        return self.write_bytes(name, text.encode("utf-8"))

    def write_bytes(self, name: str, data: bytes) -> Path:
        target = self.target(name)
        tmp = self._tmp(name)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            _unlink(tmp)
            raise
        return target

    def write_with(self, name: str, writer) -> Path:
        """``writer(tmp_path)`` writes the file (e.g. safetensors' ``save_model``); it is then
        moved into place."""
        target = self.target(name)
        tmp = self._tmp(name)
        try:
            writer(tmp)
            os.replace(tmp, target)
        except BaseException:
            _unlink(tmp)
            raise
        return target

    def copy_in(self, name: str, source: str | os.PathLike) -> Path:
        return self.write_with(name, lambda tmp: shutil.copyfile(source, tmp))

    def files(self) -> list[Path]:
        return sorted(p for p in self.path.iterdir() if p.is_file() and not p.is_symlink()
                      and not p.name.startswith("."))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def zip_dir(folder: str | os.PathLike, zip_path: str | os.PathLike, root: str) -> Path:
    """Zip the plain files directly inside ``folder`` under ``root/`` (a safe component)."""
    folder = Path(folder)
    root = safe_component(root)
    zip_path = Path(zip_path)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.iterdir()):
            if p.is_file() and not p.is_symlink() and not p.name.startswith("."):
                zf.write(p, arcname=f"{root}/{p.name}")
    return zip_path
