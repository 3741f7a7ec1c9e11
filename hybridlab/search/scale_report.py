"""What a ``hybridlab scale`` found, read back from the linked study (see ``search.scale``).

``build_result(store, plan)`` pairs each chosen proxy layout with its scaled trial and computes:

* the rank agreement of proxy quality and scaled quality (mean over seeds): Spearman's rho and
  Kendall's tau-b with 95% bootstrap intervals (``search.agreement``), over the layouts whose
  scaled training completed;
* the scaled Pareto front: quality (up) against parameters and state bytes at the proxy's
  context (down), over the same layouts;
* which members of the proxy study's own Pareto front stay on the scaled front (``stays``), which
  drop off it (``drops``), and which layouts join it from behind the proxy front (``joins``).

``ScaleResult.as_dict()`` is the ``--json`` report (NaN becomes null), ``describe()`` the text.
"""
from __future__ import annotations

import dataclasses
import math

from hybridlab.formatting import fmt_value, shown_name
from hybridlab.search.agreement import Agreement, agreement
from hybridlab.storage import Store, display_url
from hybridlab.storage.pareto import pareto_indices, to_losses


@dataclasses.dataclass
class LayoutResult:
    proxy_trial: int
    proxy_pattern: str
    proxy_quality: float
    proxy_rank: int                       # 1 = best proxy quality among the chosen layouts
    on_proxy_front: bool                  # on the proxy study's own Pareto front
    pattern: str                          # the scaled layout
    params_total: float
    state_bytes: float
    status: str                           # complete | failed | interrupted | not run
    trial: int | None = None              # its trial in the linked study
    quality: float | None = None          # mean over seeds
    quality_std: float | None = None
    qualities: list[float] = dataclasses.field(default_factory=list)
    scaled_rank: int | None = None
    on_scaled_front: bool = False
    trained_now: bool = False
    failure_reason: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ScaleResult:
    proxy_study: str
    study: str                            # the linked study
    url: str
    selection: str
    d_model: int
    layers: int
    steps: int
    seeds: int
    tasks: list
    front_axes: list[tuple[str, str]]
    layouts: list[LayoutResult]
    agreement: Agreement | None
    agreement_note: str
    scaled_front: list[int]               # proxy trial numbers, best scaled quality first
    stays: list[int]
    drops: list[int]
    joins: list[int]
    trained: int                          # layouts trained by this call
    skipped: list[str]

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["agreement"] = self.agreement.as_dict() if self.agreement else None
        out["url"] = display_url(self.url)
        return _json_safe(out)

    def describe(self) -> str:
        return format_result(self)


def _json_safe(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _ranks(values: list[float]) -> list[int]:
    """1 + how many are strictly better (higher): ties share the better rank."""
    return [1 + sum(1 for w in values if w > v) for v in values]


def _scaled_trials(store: Store, study: str) -> dict[str, dict]:
    """proxy architecture -> the trial row that speaks for it: its completed trial, else its
    latest failed one."""
    out: dict[str, dict] = {}
    for r in sorted(store.trials(study), key=lambda r: r["number"]):
        arch = (r.get("user_attrs") or {}).get("proxy_arch_hash")
        if not arch or r["state"] not in ("COMPLETE", "FAIL"):
            continue
        if out.get(arch, {}).get("state") == "COMPLETE":
            continue
        out[arch] = r
    return out


def build_result(store: Store, plan, trained: list[int] | None = None) -> ScaleResult:
    trained = set(trained or [])
    scaled = _scaled_trials(store, plan.study_name)
    proxy_ranks = _ranks([c.proxy_quality for c in plan.candidates])
    layouts = []
    for cand, rank in zip(plan.candidates, proxy_ranks):
        row = scaled.get(cand.proxy_arch)
        lay = LayoutResult(proxy_trial=cand.proxy_trial, proxy_pattern=cand.proxy_pattern,
                           proxy_quality=cand.proxy_quality, proxy_rank=rank,
                           on_proxy_front=cand.on_proxy_front, pattern=cand.pattern,
                           params_total=float(cand.costs["params_total"]),
                           state_bytes=float(cand.costs[plan.state_metric]),
                           status="not run", trained_now=cand.proxy_trial in trained,
                           notes=list(cand.notes))
        if row is not None:
            ua = row.get("user_attrs") or {}
            lay.trial = row["number"]
            if row["state"] == "COMPLETE":
                lay.status = "complete"
                lay.quality = float(row["values"]["quality"])
                lay.quality_std = ua.get("quality_std")
                lay.qualities = list(ua.get("quality_seeds") or [])
            else:
                lay.status = row.get("status") if row.get("status") == "interrupted" \
                    else "failed"
                lay.failure_reason = row.get("failure_reason")
        layouts.append(lay)

    done = [lay for lay in layouts if lay.quality is not None]
    for lay, rank in zip(done, _ranks([lay.quality for lay in done])):
        lay.scaled_rank = rank
    axes = list(zip(plan.metric_names, plan.directions))
    losses = [to_losses((lay.quality, lay.params_total, lay.state_bytes), plan.directions)
              for lay in done]
    for i in pareto_indices(losses):
        done[i].on_scaled_front = True
    if len(done) >= 3:
        agree = agreement([lay.proxy_quality for lay in done], [lay.quality for lay in done])
        note = ""
        if not math.isfinite(agree.spearman):
            note = "one of the rankings is constant (all qualities equal): no correlation"
    else:
        agree, note = None, (f"only {len(done)} of {len(layouts)} layouts finished scaled "
                             f"training; rank correlations need 3")
    front = sorted((lay for lay in done if lay.on_scaled_front), key=lambda lay: -lay.quality)
    return ScaleResult(
        proxy_study=plan.proxy_study, study=plan.study_name, url=plan.url,
        selection=plan.selection, d_model=plan.d_model, layers=plan.layers, steps=plan.steps,
        seeds=plan.seeds, tasks=[[n, dict(s)] for n, s in plan.tasks], front_axes=axes,
        layouts=layouts, agreement=agree, agreement_note=note,
        scaled_front=[lay.proxy_trial for lay in front],
        stays=[lay.proxy_trial for lay in done if lay.on_proxy_front and lay.on_scaled_front],
        drops=[lay.proxy_trial for lay in done if lay.on_proxy_front and not lay.on_scaled_front],
        joins=[lay.proxy_trial for lay in done if lay.on_scaled_front and not lay.on_proxy_front],
        trained=len(trained), skipped=list(plan.skipped))


# -- text ---------------------------------------------------------------------------------------
def _trials(numbers: list[int]) -> str:
    return ", ".join(f"#{n}" for n in numbers) if numbers else "none"


def _quality(lay: LayoutResult) -> str:
    if lay.quality is None:
        return lay.status
    if len(lay.qualities) > 1:
        return f"{lay.quality:.4f} ± {lay.quality_std or 0.0:.4f}"
    return f"{lay.quality:.4f}"


def format_result(res: ScaleResult) -> str:
    tasks = ", ".join(n + (":" + ",".join(f"{k}={v}" for k, v in s.items()) if s else "")
                      for n, s in res.tasks)
    state = res.front_axes[2][0]
    earlier = sum(1 for x in res.layouts if x.status == "complete" and not x.trained_now)
    lines = [
        f"scaled {len(res.layouts)} layouts of study {shown_name(res.proxy_study)!r} "
        f"({'its Pareto front' if res.selection == 'front' else res.selection}) to "
        f"d_model {res.d_model}, {res.layers} mixer layers; {res.steps} steps on {tasks}, "
        f"{res.seeds} seed{'s' if res.seeds > 1 else ''} each",
        f"linked study {shown_name(res.study)!r} in {display_url(res.url)}: trained "
        f"{res.trained} now, {earlier} from earlier runs",
    ]
    if res.skipped:
        lines.append("skipped (each layout counts once): " + "; ".join(res.skipped))
    rows = [["proxy", "proxy pattern", "proxy q", "rank", "scaled q" + (" (± sd)" if res.seeds > 1
             else ""), "rank", "params", state, "front"]]
    for lay in res.layouts:
        front = ("P" if lay.on_proxy_front else "-") + ("S" if lay.on_scaled_front else "-")
        rows.append([f"#{lay.proxy_trial}", shown_name(lay.proxy_pattern)[:24],
                     f"{lay.proxy_quality:.4f}", str(lay.proxy_rank), _quality(lay),
                     str(lay.scaled_rank or "-"), fmt_value("params_total", lay.params_total),
                     fmt_value(state, lay.state_bytes), front])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        lines.append("  " + "  ".join(c.ljust(w) if i == 1 else c.rjust(w)
                                      for i, (c, w) in enumerate(zip(r, widths))))
    lines.append("  front: P = on the proxy study's Pareto front, S = on the scaled front")
    for lay in res.layouts:
        if lay.failure_reason:
            lines.append(f"  #{lay.proxy_trial} {lay.status}: "
                         f"{shown_name(lay.failure_reason.splitlines()[0])}")
    if res.agreement is not None:
        lines.append("proxy vs scaled quality: " + res.agreement.describe())
    if res.agreement_note:
        lines.append("proxy vs scaled quality: " + res.agreement_note)
    axes = ", ".join(f"{m} {'↑' if d == 'maximize' else '↓'}" for m, d in res.front_axes)
    lines.append(f"proxy front members: stay on the scaled front {_trials(res.stays)}; "
                 f"drop off {_trials(res.drops)}; joining it {_trials(res.joins)}")
    lines.append(f"scaled Pareto front ({axes}):")
    by_trial = {lay.proxy_trial: lay for lay in res.layouts}
    for n in res.scaled_front:
        lay = by_trial[n]
        lines.append(f"  #{n:<5} trial {lay.trial:<4} {shown_name(lay.pattern)[:40]:<40} "
                     f"quality {_quality(lay)}  "
                     f"params {fmt_value('params_total', lay.params_total)}  "
                     f"{state} {fmt_value(state, lay.state_bytes)}")
    return "\n".join(lines)
