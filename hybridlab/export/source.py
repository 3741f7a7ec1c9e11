"""Which trial to export, and where its spec and weights are.

    src = find_trial(store, "search-quick", best="quality")      # or trial=3
    src.spec, src.weights, src.detail, src.objectives

A trial's weights are the ``weights`` artifact recorded in the database; the file must still
have the recorded sha256. When the database folder was moved, the same file is looked for in
the conventional place ``<artifact root>/<study>/trial-NNNNN/model.safetensors``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hybridlab.errors import Problem, SpecError
from hybridlab.storage import Store
from hybridlab.storage import views
from hybridlab.storage.repository import file_sha256


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
        import hybridlab
        return hybridlab.load_spec(self.spec_yaml, source=f"<{self.study} trial {self.number}>")


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
    from hybridlab.search.objective import artifact_dir
    candidates = [Path(record["path"])]
    source_number = detail.get("reused_from")
    for n in ([source_number] if source_number is not None else []) + [number]:
        candidates.append(artifact_dir(store, study, int(n)) / "model.safetensors")
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
