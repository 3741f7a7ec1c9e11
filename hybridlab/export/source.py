"""Which trial to export, and where its spec and weights are.

    src = find_trial(store, "search-quick", best="quality")      # or trial=3
    src.spec, src.weights, src.detail, src.objectives

A trial's weights are the ``weights`` artifact recorded in the database; the file must still
have the recorded sha256. It is found through the study's artifact store
(``hybridlab.storage.artifacts``: ``$HYBRIDLAB_ARTIFACTS``, the folder the search recorded, the
folder beside a SQLite file) at ``<root>/<study>/trial-NNNNN/model.safetensors`` -- never through
the current folder -- and last at the path the writing process recorded.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from hybridlab.composer.loader import load_spec
from hybridlab.specs.source import parse_yaml
from hybridlab.errors import ExportError, Problem, SpecError
from hybridlab.storage import Store, printable
from hybridlab.storage import views
from hybridlab.storage.artifacts import reading_roots, trial_path
from hybridlab.storage.repository import file_sha256

WEIGHTS = "model.safetensors"


@dataclass
class TrialSource:
    study: str
    number: int
    detail: dict                       # Store.trial_detail
    spec_yaml: str
    objectives: list[dict] = field(default_factory=list)   # [{metric, direction, value}]
    weights: Path | None = None
    weights_sha256: str | None = None
    chosen_by: str = ""                # "trial 3" / "best quality (maximize)"

    @property
    def spec(self):
        """The trial's model spec, read back from the database: never imports plugins."""
        return load_stored_spec(
            self.spec_yaml, f"<{self.study} trial {self.number}>",
            where=f"the spec of trial {self.number} of study {self.study!r}",
            origin="a database",
            then="export from Python: hybridlab.export.native.export_native(Store(URL, "
                 f"readonly=True), {self.study!r}, OUT, trial={self.number})")


def load_stored_spec(text: str, shown_as: str, *, where: str, origin: str, then: str):
    """A model spec that hybridlab wrote (an export's spec.yaml, a spec in a database), loaded
    without ever importing its ``plugins`` (modules already imported are accepted). Problems
    become one ``ExportError``: ``where`` names the spec, ``origin`` says where it came from
    and ``then`` what to do once the plugin modules are imported."""
    try:
        return load_spec(text, source=shown_as)          # allow_plugins=False: imports nothing
    except SpecError as e:
        if any(p.field.split(".")[0].split("[")[0] == "plugins" for p in e.problems):
            missing = [m for m in _plugin_names(text, shown_as) if sys.modules.get(m) is None]
            if missing:
                raise ExportError(
                    f"{where} names plugins ({', '.join(printable(m) for m in missing)}): "
                    f"Python modules whose code would run. hybridlab never imports code named "
                    f"by {origin}. If you trust them, import them yourself first (import "
                    f"{printable(missing[0])}), then {then}"
                ) from None
        raise ExportError(f"{where} is not a valid model spec (edited, or written by another "
                          f"version of hybridlab):\n" + "\n".join(e.lines())) from None


def _plugin_names(text: str, shown_as: str) -> list[str]:
    try:
        data, _ = parse_yaml(text, shown_as)
    except SpecError:
        return []
    names = data.get("plugins") if isinstance(data, dict) else None
    names = [names] if isinstance(names, str) else names
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def _problem(message: str, hint: str = "", field_: str = "") -> SpecError:
    return SpecError(Problem(message, file="<command line>", field=field_, hint=hint))


def find_trial(store: Store, study: str, *, trial: int | None = None, best: str | None = None,
               need_weights: bool = True) -> TrialSource:
    """The trial ``trial`` of ``study``, or its best feasible finished trial by metric ``best``.
    Raises ``SpecError`` (a user error with a hint) when the study, trial, metric or weights
    are missing."""
    names = views.study_names(store)
    if study not in names:
        raise _problem(f"no study {study!r} in the database", field_="--study",
                       hint=("studies: " + ", ".join(names)) if names else
                       "no studies yet: run 'hybridlab search SPEC' first")
    meta = views.study_meta(store, study)
    if (trial is None) == (best is None):
        raise _problem("give exactly one of --trial N and --best OBJECTIVE",
                       hint="objectives: " + ", ".join(meta["metric_names"]))
    if best is not None:
        try:
            row = views.best_trial(store, study, best)
        except KeyError as e:
            raise _problem(str(e.args[0]), field_="--best",
                           hint="objectives: " + ", ".join(meta["metric_names"])) from None
        trial = int(row["number"])
        chosen = f"best {best} ({views.direction(best, meta)})"
    else:
        chosen = f"trial {trial}"
    try:
        detail = store.trial_detail(study, int(trial))
    except KeyError:
        numbers = views.trial_numbers(store, study)
        raise _problem(f"study {study!r} has no trial {trial}", field_="--trial",
                       hint=f"trials: {min(numbers)}..{max(numbers)}" if numbers else
                       "the study has no trials yet") from None
    spec_yaml = detail.get("spec_yaml") or ""
    if not spec_yaml:
        why = detail.get("failure_reason") or detail.get("status") or detail.get("state")
        raise _problem(f"trial {trial} of {study!r} has no model spec recorded ({why})",
                       hint="pick a trial that got as far as building its model")
    objectives = [{"metric": m, "direction": d, "value": detail["values"].get(m)}
                  for m, d in zip(meta["metric_names"], meta["directions"])]
    src = TrialSource(study=study, number=int(trial), detail=detail, spec_yaml=spec_yaml,
                      objectives=objectives, chosen_by=chosen)
    if need_weights:
        src.weights, src.weights_sha256 = weights_file(store, detail, study, int(trial))
    return src


def weights_file(store: Store, detail: dict, study: str, number: int) -> tuple[Path, str]:
    """Path and verified sha256 of a trial's saved weights."""
    record = next((a for a in detail.get("artifacts", []) if a.get("kind") == "weights"), None)
    if record is None:
        state = detail.get("status") or detail.get("state")
        raise _problem(f"trial {number} of {study!r} has no saved weights (status {state})",
                       hint="only trained trials have weights; use --layout-only to export "
                            "the layout at any size, or pick another trial")
    source_number = detail.get("reused_from")
    numbers = ([int(source_number)] if source_number is not None else []) + [number]
    candidates = [trial_path(root, study, n, WEIGHTS)
                  for root in reading_roots(store, study) for n in numbers]
    candidates.append(Path(record["path"]))     # where the writing process saw it
    tried = []
    for path in candidates:
        if path in tried:
            continue
        tried.append(path)
        if not path.is_file():
            continue
        sha, size = file_sha256(path)
        if sha == record["sha256"]:
            return path, sha
    raise _problem(f"the weights of trial {number} of {study!r} are missing or changed",
                   hint="looked for a file with sha256 " + record["sha256"][:12] + "... at: "
                        + ", ".join(str(p) for p in tried))
