"""What every tab of the web UI shares: the database (read through ``hybridlab.storage`` only,
read-only), the folders callers may name (``roots``: the folder the UI was started in and the
shipped examples), a scratch folder for downloads, and the launcher of background searches."""
from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

from hybridlab.formatting import shown_name
from hybridlab.storage import Store, display_url, resolve_url
from hybridlab.storage.engine import database_exists
from hybridlab.ui.paths import Roots, shipped_examples


class UIContext:
    def __init__(self, db: str | None = None, *, work_dir: str | os.PathLike | None = None,
                 enable_launch: bool = True, base_dir: str | os.PathLike | None = None):
        from hybridlab.ui.launcher import Launcher

        self.url = resolve_url(db)
        if work_dir is None:
            # inside Gradio's own temp folder: files returned from there are always servable
            gradio_tmp = Path(os.environ.get("GRADIO_TEMP_DIR")
                              or Path(tempfile.gettempdir()) / "gradio")
            gradio_tmp.mkdir(parents=True, exist_ok=True)
            work_dir = tempfile.mkdtemp(prefix="hybridlab-ui-", dir=gradio_tmp)
        self.work_dir = Path(work_dir).resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir = Path(base_dir or Path.cwd()).resolve()
        self.roots = Roots([self.base_dir, shipped_examples()])
        self.enable_launch = enable_launch
        self.launcher = Launcher(self.url, self.work_dir / "launches", self.roots)
        self._store: Store | None = None
        self._lock = threading.Lock()

    @property
    def shown_url(self) -> str:
        """The database as the page and the log show it (no password, control characters
        escaped)."""
        return shown_name(display_url(self.url))

    def store(self) -> Store:
        """The read-only Store; re-opened once a database that was missing appears (e.g. the
        first search launched from the page creates it)."""
        with self._lock:
            if self._store is None or (self._store.engine is None
                                       and database_exists(self.url)):
                self._store = Store(self.url, readonly=True)
            return self._store

    def scratch(self, name: str) -> Path:
        path = self.work_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path
