"""Writing export files without ever leaving the export folder or overwriting anything.

* ``safe_component(text)`` turns a name from the database (a study name like ``../../x``) into
  one harmless path component: letters, digits, ``_ . -`` only, no leading dots, never empty.
* ``check_out_dir(path, force)`` refuses, before any work is done, an output folder that is a
  symlink or reached through one, a file, or a folder that already holds something (unless
  ``force``: then files of the export's names are replaced and others are kept).
* ``ExportDir(path, force)`` checks the same, creates the folder and writes plain files
  *directly inside it*: a name with a separator or ``..`` is refused, and every file is written
  to a fresh temporary file in the folder and moved into place with ``os.replace`` -- so an
  existing symlink named like an export file is replaced, never followed. Files get the
  permissions of any new file (0666 less the umask; 0644 usually), not a temporary file's 0600.

Every refusal is an ``ExportError`` (``UnsafePath`` is one) that says what to do.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import zipfile
from pathlib import Path

from hybridlab.errors import ExportError

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_component(text: str, default: str = "export", max_len: int = 80) -> str:
    """One path component made from arbitrary text (``../../x`` -> ``x``)."""
    name = _UNSAFE.sub("_", str(text)).strip("._-")
    name = re.sub(r"\.{2,}", ".", name)[:max_len].strip("._-")
    return name or default


class UnsafePath(ExportError, ValueError):
    pass


def _symlink_on_the_way(path: Path) -> Path | None:
    """The first symlink among the components of ``path`` as written (a relative path from
    the current folder on), or None."""
    parts = path.parts
    start = Path(parts[0]) if path.is_absolute() else Path()
    here = start
    for part in parts[1:] if path.is_absolute() else parts:
        here = here / part
        if here.is_symlink():
            return here
        if not here.exists():
            return None
    return None


def check_out_dir(path: str | os.PathLike, force: bool = False) -> Path:
    """``path`` as given (user folder expanded), or ``UnsafePath`` / ``ExportError``: a symlink
    on the way, a file, or a folder with something in it (without ``force``)."""
    if isinstance(path, ExportDir):
        return path.path                       # checked when it was made
    path = Path(path).expanduser()
    link = _symlink_on_the_way(path)
    if link is not None:
        raise UnsafePath(f"{path}: {link} is a symlink (to {os.readlink(link)}); exports are "
                         f"written only into real folders. Give --out the real path "
                         f"({path.resolve()}) or another folder")
    if path.exists() and not path.is_dir():
        raise ExportError(f"{path} is a file, not a folder: give --out a new folder to export "
                          f"into")
    if path.is_dir() and not force:
        try:
            entries = sorted(p.name for p in path.iterdir())
        except OSError as e:
            raise ExportError(f"cannot read the folder {path}: {e.strerror}") from None
        if entries:
            shown = ", ".join(repr(n) if not n.isprintable() else n for n in entries[:5])
            more = f" and {len(entries) - 5} more" if len(entries) > 5 else ""
            raise ExportError(f"{path} is not empty ({shown}{more}); an export never "
                              f"overwrites a folder. Give --out a new folder, or add --force "
                              f"(force=True in Python) to replace the export's files in it "
                              f"(other files are kept)")
    return path


class ExportDir(os.PathLike):
    """A folder that export files go into, and nowhere else. An ``ExportDir`` is a path too:
    passing one where an output folder is expected (``ExportDir(ExportDir(p, force=True))``)
    keeps the checks and the ``force`` already decided."""

    def __init__(self, path: str | os.PathLike, force: bool = False):
        if isinstance(path, ExportDir):
            self.path, self._mode = path.path, path._mode
            return
        path = check_out_dir(path, force)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ExportError(f"cannot create the folder {path}: {e.strerror}; give --out a "
                              f"folder you may write") from None
        self.path = path.resolve()
        self._mode: int | None = None

    def __fspath__(self) -> str:
        return str(self.path)

    def target(self, name: str) -> Path:
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name \
                or name != os.path.basename(name):
            raise UnsafePath(f"refusing to write {name!r}: export files are plain names")
        target = self.path / name
        if target.parent.resolve() != self.path:
            raise UnsafePath(f"refusing to write {name!r} outside {self.path}")
        return target

    def _tmp(self, name: str) -> str:
        """A new empty file in the folder, created as any new file is (0666 less the umask)."""
        while True:
            tmp = str(self.path / f".{name}.{secrets.token_hex(6)}.tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                continue
            except OSError as e:
                raise ExportError(f"cannot write in {self.path}: {e.strerror}") from None
            os.close(fd)
            if self._mode is None:
                self._mode = os.stat(tmp).st_mode & 0o777
            return tmp

    def _finish(self, tmp: str, target: Path) -> None:
        os.chmod(tmp, self._mode or 0o644)    # writers such as safetensors make 0600 files
        os.replace(tmp, target)

    def write_text(self, name: str, text: str) -> Path:
        return self.write_bytes(name, text.encode("utf-8"))

    def write_bytes(self, name: str, data: bytes) -> Path:
        target = self.target(name)
        tmp = self._tmp(name)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            self._finish(tmp, target)
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
            self._finish(tmp, target)
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
