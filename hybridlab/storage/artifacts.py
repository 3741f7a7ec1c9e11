"""Where trial artifacts (trained weights, specs) live, and how every process finds them.

* The artifact store is one folder. Default: ``<db stem>-artifacts`` beside a SQLite file
  (everything on one machine). A server database (PostgreSQL) has no default: the machines of a
  search, the UI and export must all see the same files, so a search needs an explicit shared
  folder -- ``--artifacts DIR``, or ``HYBRIDLAB_ARTIFACTS=DIR`` (what ``--artifacts`` hands to
  the worker processes; also for the Python API).
* The folder holds a marker, ``.hybridlab-artifacts.json``, with a random id. The first search
  of a study records the folder and its id on the study (user attribute ``hybridlab_artifacts``).
  A process that joins later must give a folder holding the same id -- the same shared folder,
  mounted anywhere -- or it is refused before it trains anything: a folder on its own disk would
  hide its weights from everyone else.
* Readers (export, the UI's export) resolve a trial's files through the store, never through
  the current folder: ``HYBRIDLAB_ARTIFACTS`` when set (a machine that mounts the share
  elsewhere), the folder recorded on the study, the default beside a SQLite file. The caller
  checks each file against the sha256 the database recorded.
* Layout: ``<root>/<study>/trial-NNNNN/{model.safetensors,spec.yaml}``, the study name made one
  safe path component. Nothing is written outside the root: a symlink inside it that leads out
  is refused, and files are written to a fresh name and moved into place (a symlink of the
  file's name is replaced, never followed).

    store = attach(Store(url), "my-study")           # a search: record or check the folder
    folder = store.make_trial_folder("my-study", 3)
    store.write(folder, "spec.yaml", lambda tmp: tmp.write_text(text))
    for root in reading_roots(Store(url, readonly=True), "my-study"): ...
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hybridlab.errors import StoreError

from .engine import artifact_root, display_url, is_sqlite, resolve_url, sqlite_path
from .health import translated
from .locks import StudyLock

ENV = "HYBRIDLAB_ARTIFACTS"
MARKER = ".hybridlab-artifacts.json"
STUDY_ATTR = "hybridlab_artifacts"

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_ID = re.compile(r"^[0-9a-f]{32}$")


class ArtifactsError(StoreError):
    """The artifact folder cannot be used as asked (none given for a server database, not the
    study's shared folder, not writable, a symlink leading out of it)."""


def folder_name(study: str) -> str:
    """A study name as one harmless path component (``../x`` -> ``x``; never ``.`` or ``..``)."""
    return _UNSAFE.sub("_", str(study)).strip("._") or "study"


def _absolute(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(Path(path).expanduser()))


# -- which folder ------------------------------------------------------------------------------
def configured(url: str, given: str | os.PathLike | None = None) -> Path | None:
    """The folder this process writes to: ``given`` (--artifacts), else ``$HYBRIDLAB_ARTIFACTS``,
    else the default beside a SQLite file; None for a server database without either."""
    if given is not None and str(given).strip():
        return _absolute(given)
    env = os.environ.get(ENV, "").strip()
    if env:
        return _absolute(env)
    url = resolve_url(url)
    if is_sqlite(url):
        return artifact_root(url)
    return None


def required(url: str, given: str | os.PathLike | None = None) -> Path:
    """``configured``, or an ``ArtifactsError`` naming ``--artifacts`` for a server database."""
    root = configured(url, given)
    if root is None:
        raise ArtifactsError(
            f"a search on {display_url(resolve_url(url))} needs --artifacts DIR: a folder that "
            f"every machine of the search can write and the UI and export can read (a shared "
            f"file system, mounted on each machine). Trained weights are written there and the "
            f"database records where. From Python, or for workers you start yourself, set "
            f"HYBRIDLAB_ARTIFACTS=DIR instead")
    if root.exists() and not root.is_dir():
        raise ArtifactsError(f"--artifacts {root} is a file, not a folder: give a folder "
                             f"(it is created when missing)")
    return root


@contextlib.contextmanager
def using(root: str | os.PathLike):
    """Make ``root`` this process's artifact folder, and that of the worker processes it starts
    (they inherit ``HYBRIDLAB_ARTIFACTS``), until the block ends."""
    before = os.environ.get(ENV)
    os.environ[ENV] = str(_absolute(root))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before


# -- the folder and its marker -----------------------------------------------------------------
@dataclass(frozen=True)
class ArtifactStore:
    root: Path          # absolute, symlinks resolved
    id: str             # the marker's id

    def study_folder(self, study: str) -> Path:
        return self.root / folder_name(study)

    def trial_folder(self, study: str, number: int) -> Path:
        return trial_path(self.root, study, number, "")

    def make_trial_folder(self, study: str, number: int) -> Path:
        """Create (if needed) and return a trial's folder, refusing one that a symlink inside
        the root leads out of it."""
        folder = self.root
        for part in (folder_name(study), f"trial-{int(number):05d}"):
            folder = folder / part
            if not folder.is_symlink():     # one level at a time: never create through a link
                try:
                    folder.mkdir(exist_ok=True)
                except OSError as e:
                    raise ArtifactsError(
                        f"cannot create {folder} ({e.strerror}): the artifact folder "
                        f"{self.root} must be writable by every search process") from None
            inside(self.root, folder)
        return folder

    def write(self, folder: Path, name: str, write: Callable[[Path], None]) -> Path:
        """Write the file ``name`` in ``folder`` (a trial folder of this store): ``write(tmp)``
        fills a fresh file, which then replaces ``folder/name`` atomically."""
        if not name or name in (".", "..") or "/" in name or os.sep in name:
            raise ArtifactsError(f"refusing to write {name!r}: not a plain file name")
        inside(self.root, folder)
        tmp = folder / f".{name}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            write(tmp)
            os.replace(tmp, folder / name)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return folder / name


def inside(root: Path, path: Path) -> Path:
    """``path`` with symlinks resolved, or an ``ArtifactsError`` when that leaves ``root``."""
    real = path.resolve()
    if not real.is_relative_to(root.resolve()):
        raise ArtifactsError(f"{path} leads out of the artifact folder {root} (to {real}, "
                             f"through a symlink): remove the symlink; nothing is written "
                             f"outside the artifact folder")
    return real


def _read_marker(marker: Path, wait_s: float = 2.0) -> str | None:
    """The id in ``marker``; None when there is no marker. A marker being written (empty) is
    waited for a moment; one that is not ours is an error."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            text = marker.read_text()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ArtifactsError(f"cannot read {marker} ({e.strerror})") from None
        try:
            ident = json.loads(text).get("id") if text.strip() else None
        except (ValueError, AttributeError):
            ident = None
        if isinstance(ident, str) and _ID.match(ident):
            return ident
        if text.strip() or time.monotonic() > deadline:
            raise ArtifactsError(f"{marker} is not a hybridlab artifact marker (it should hold "
                                 f"{{\"id\": <32 hex digits>}}); restore it, or give another "
                                 f"folder")
        time.sleep(0.05)


def open_root(root: Path, create: bool = True) -> ArtifactStore | None:
    """The store in ``root``: its marker's id (a new marker when ``create`` and there is none;
    None when there is none and not ``create``)."""
    root = _absolute(root)
    marker = root / MARKER
    ident = _read_marker(marker) if root.is_dir() else None
    if ident is None:
        if not create:
            return None
        try:
            root.mkdir(parents=True, exist_ok=True)
            _create_marker(marker)
        except OSError as e:
            raise ArtifactsError(f"cannot create the artifact folder {root} ({e.strerror}); "
                                 f"give --artifacts a folder this process can write") from None
        ident = _read_marker(marker)
        if ident is None:
            raise ArtifactsError(f"{marker} vanished while it was created; try again")
    return ArtifactStore(root.resolve(), ident)


def _create_marker(marker: Path) -> None:
    """Create the marker unless one exists: processes that start together agree on one id."""
    body = json.dumps({"id": uuid.uuid4().hex, "host": socket.gethostname(),
                       "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n"
    tmp = marker.with_name(f"{MARKER}.{uuid.uuid4().hex[:12]}.tmp")
    tmp.write_text(body)
    try:
        os.link(tmp, marker)                 # atomic; fails if another process made one
    except FileExistsError:
        pass
    except OSError:                          # a file system without hard links
        with contextlib.suppress(FileExistsError):
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(body)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


# -- the study's record ------------------------------------------------------------------------
def recorded(store, study: str) -> dict | None:
    """``{"root": ..., "id": ...}`` recorded on the study, or None (no study, or a study from
    before artifact stores were recorded)."""
    with translated(store.url):
        storage = store.optuna_storage()
        try:
            study_id = storage.get_study_id_from_name(study)
        except KeyError:
            return None
        value = storage.get_study_user_attrs(study_id).get(STUDY_ATTR)
    if isinstance(value, dict) and isinstance(value.get("root"), str) \
            and isinstance(value.get("id"), str):
        return value
    return None


def attach(store, study: str, root: str | os.PathLike | None = None) -> ArtifactStore:
    """The artifact store this process writes ``study``'s files to: ``root``, else
    ``required(store.url)``. The first process records it on the study (under the study
    lock); every later one must give the same folder (its marker's id), or is refused."""
    root = required(store.url) if root is None else _absolute(root)
    with translated(store.url):
        return _attach(store, study, root)


def _attach(store, study: str, root: Path) -> ArtifactStore:
    rec = recorded(store, study)
    if rec is None:
        with StudyLock(store.url, study):
            rec = recorded(store, study)
            if rec is None:
                art = open_root(root)
                storage = store.optuna_storage()
                storage.set_study_user_attr(storage.get_study_id_from_name(study), STUDY_ATTR,
                                            {"root": str(art.root), "id": art.id})
                return art
    art = open_root(root, create=False)
    if art is None or art.id != rec["id"]:
        what = (f"holds no marker {MARKER}" if art is None else
                f"is marked as another artifact folder (id {art.id[:12]}...)")
        if art is None and str(_absolute(root).resolve()) == rec["root"]:
            what += (" (on this machine the path is not the shared folder: mount the share "
                     "there; or the folder was emptied)")
        raise ArtifactsError(
            f"--artifacts {root} is not the artifact folder of study {study!r}: the study "
            f"keeps its trained weights in {rec['root']} (marked {MARKER}, id "
            f"{rec['id'][:12]}...), and {root} {what}. Every process of a search writes to that "
            f"one shared folder: give --artifacts the shared folder as this machine mounts it "
            f"(or give the study a new name to start afresh)")
    return art


def reading_roots(store, study: str) -> list[Path]:
    """Folders where ``study``'s artifacts may be, in the order to try them:
    ``$HYBRIDLAB_ARTIFACTS``, the folder recorded on the study, beside a SQLite file."""
    roots: list[Path] = []
    env = os.environ.get(ENV, "").strip()
    if env:
        roots.append(_absolute(env))
    rec = recorded(store, study)
    if rec is not None:
        roots.append(Path(rec["root"]))
    if is_sqlite(store.url) and sqlite_path(store.url) is not None:
        roots.append(artifact_root(store.url))
    out: list[Path] = []
    for r in roots:
        if r not in out:
            out.append(r)
    return out


def trial_path(root: Path, study: str, number: int, name: str) -> Path:
    """Where the layout puts a trial's file ``name`` in the store at ``root``."""
    return Path(root) / folder_name(study) / f"trial-{int(number):05d}" / name
