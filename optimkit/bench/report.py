"""The report: leaderboard.md, report.html (self-contained), results.csv, results.json, PNGs.

``build(out)`` reads only the database in ``out`` and rewrites every other file there.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import re
from pathlib import Path
from typing import Any

from .. import registry
from .scoring import STAR_FORMULA, Summary, summarise
from .store import Store
from .suite import Config, lr_grid

STAR = "⭐"
CAVEAT = ("Ranks use the means only: where two optimizers' intervals overlap, their order is "
          "within the noise of this small suite, so read their stars as a tie.")
CSV_COLUMNS = (
    "task", "optimizer", "lr", "seeds", "metric", "mean", "ci95", "divergence_rate",
    "reached_rate", "steps_to_target", "seconds_to_target", "step_time_us",
    "state_bytes_per_param", "rank", "error",
)


def load(out: Path | str) -> Summary:
    """The summary of the last run recorded in ``out``'s database."""
    with Store(out, create=False) as store:
        config = store.last_config()
        if config is None:
            raise ValueError(f"the database in {out} records no run")
        return summarise(Config.from_json(config, version=config["version"]),
                         store.task_meta(), store.cells())


def build(out: Path | str, notes: Path | str | None = None) -> list[Path]:
    """Rebuild every output in ``out`` from its database; returns the files written.

    With ``notes`` (a markdown file holding a table with a Score column), also writes
    ``notes.md``: that file with every Score cell replaced by the measured one.
    """
    from .plots import all_plots

    out = Path(out)
    summary = load(out)
    pictures = all_plots(summary, out)
    files = [] if notes is None else [
        _write(out / "notes.md", fill_notes(Path(notes).read_text(encoding="utf-8"), summary))]
    files += [
        _write(out / "leaderboard.md", leaderboard(summary)),
        _write(out / "results.csv", results_csv(summary)),
        _write(out / "results.json", json.dumps(results_json(summary), indent=2) + "\n"),
    ]
    files.append(_write(out / "report.html", page(summary, pictures)))
    return files + pictures


def _write(path: Path, text: str) -> Path:
    # Write then rename: a reader never sees half a file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


# ------------------------------------------------------------------ numbers as text
def fmt(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
        return f"{value:.2e}"
    return f"{value:.{digits}f}"


def mean_pm(mean: float, ci: float, error: str | None = None) -> str:
    if error:
        return "failed"
    if math.isnan(mean):
        return "diverged"
    return fmt(mean) if math.isnan(ci) else f"{fmt(mean)} ± {fmt(ci)}"


def _stars(count: int) -> str:
    return STAR * count if count else "☆"  # zero stars, measured ("–" means not measured)


def _html_stars(count: int) -> str:
    # Text stars (in every font), not the emoji the markdown uses: headless browsers
    # and many desktops have no colour-emoji font.
    return "★" * count + "☆" * (3 - count)


def rows(summary: Summary) -> list[dict[str, Any]]:
    """One row per (task, optimizer) with a result: the numbers of results.csv/json."""
    out = []
    for (task, optimizer), cell in summary.cells.items():
        rank = summary.ranks.get(task, {}).get(optimizer)
        out.append({
            "task": task, "optimizer": optimizer, "lr": cell.lr, "seeds": len(cell.finals),
            "metric": summary.tasks[task]["metric"], "mean": cell.mean, "ci95": cell.ci,
            "divergence_rate": cell.divergence_rate, "reached_rate": cell.reached_rate,
            "steps_to_target": cell.steps_to_target,
            "seconds_to_target": cell.seconds_to_target, "step_time_us": cell.step_time_us,
            "state_bytes_per_param": cell.state_bytes_per_param, "rank": rank,
            "error": cell.error,
        })
    return out


def results_csv(summary: Summary) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows(summary):
        writer.writerow({k: ("" if _missing(v) else v) for k, v in row.items()})
    return buffer.getvalue()


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def results_json(summary: Summary) -> dict[str, Any]:
    clean = lambda v: None if _missing(v) else v
    return {
        "protocol": protocol(summary),
        "score_formula": STAR_FORMULA,
        "tasks": summary.tasks,
        "scores": {o: {"stars": summary.stars[o], "mean_rank": clean(summary.mean_rank[o])}
                   for o in summary.config.optimizers},
        "results": [{k: clean(v) for k, v in row.items()} for row in rows(summary)],
    }


def protocol(summary: Summary) -> dict[str, Any]:
    c = summary.config
    return {
        "version": c.version, "device": c.device, "optimizers": list(c.optimizers),
        "tasks": list(c.tasks), "seeds": c.seeds, "tuning_budget": c.budget,
        "lr_grid": lr_grid(c.budget),
        "tuning": "one run per lr on seed 0, scored on the validation split; other hypers at "
                  "their defaults; the best lr is rerun on seeds 1..N and scored on the test split",
    }


# ------------------------------------------------------------------ leaderboard.md
def _paper(name: str) -> str:
    entry = registry.REGISTRY.get(name)
    if entry is None or not entry.paper:
        return str(entry.year or "") if entry else ""
    return f"[{entry.year or 'paper'}]({entry.paper})"


def _description(name: str) -> str:
    entry = registry.REGISTRY.get(name)
    return entry.reference.description if entry else ""


def leaderboard(summary: Summary) -> str:
    c = summary.config
    real = summary.real_tasks
    head = ["", "Reproduces", "Paper", "Score", "mean rank",
            *[f"{t} ({summary.tasks[t]['metric']})" for t in real],
            "diverged", "µs/step", "state B/param"]
    lines = [
        "# optimkit bench: leaderboard", "",
        f"optimkit {c.version}, device {c.device}; {len(c.optimizers)} optimizers, "
        f"{len(real)} real tasks; learning rate tuned on the same grid of {c.budget} values "
        f"({', '.join(f'{lr:g}' for lr in lr_grid(c.budget))}) for every optimizer on seed 0, "
        f"then {c.seeds} seeds at the best lr. Cells: mean ± 95 % CI over the seeds.", "",
        f"**Score**: {STAR_FORMULA}", "",
        f"_{CAVEAT}_", "",
        "## The notes' table, Score filled", "",
        fill_notes(NOTES_TABLE.read_text(encoding="utf-8"), summary).rstrip("\n"), "",
        "## Every optimizer, task by task", "",
        "| " + " | ".join(head) + " |",
        "|:--|:--|:--|:--|--:|" + "--:|" * (len(real) + 3),
    ]
    order = sorted(c.optimizers, key=lambda o: (_nan_last(summary.mean_rank[o]), o))
    for optimizer in order:
        cells = [summary.cells.get((t, optimizer)) for t in real]
        diverged = [x.divergence_rate for x in cells if x is not None]
        values = [mean_pm(x.mean, x.ci, x.error) + f" (lr {x.lr:g})" if x else "–" for x in cells]
        lines.append("| " + " | ".join([
            f"**{optimizer}**", _description(optimizer), _paper(optimizer),
            _stars(summary.stars[optimizer]), fmt(summary.mean_rank[optimizer], 2), *values,
            fmt(sum(diverged) / len(diverged), 2) if diverged else "–",
            fmt(_avg([x.step_time_us for x in cells if x]), 1),
            fmt(_avg([x.state_bytes_per_param for x in cells if x]), 1),
        ]) + " |")
    lines += ["", *time_to_target(summary), "", *illustrative(summary), ""]
    return "\n".join(lines)


def _nan_last(value: float) -> float:
    return math.inf if math.isnan(value) else value


def _avg(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


def time_to_target(summary: Summary) -> list[str]:
    real = summary.real_tasks
    lines = ["## Steps (and seconds) to reach the target", "",
             "| | " + " | ".join(f"{t} ({summary.tasks[t]['metric']} "
                                  f"{'≥' if summary.tasks[t]['higher_is_better'] else '≤'} "
                                  f"{summary.tasks[t]['target']:g})" for t in real) + " |",
             "|:--|" + "--:|" * len(real)]
    for optimizer in summary.config.optimizers:
        cells = [summary.cells.get((t, optimizer)) for t in real]
        lines.append(f"| **{optimizer}** | " + " | ".join(_reach(x) for x in cells) + " |")
    return lines


def _reach(cell) -> str:
    if cell is None or not cell.finals:
        return "–"
    if cell.reached_rate == 0:
        return "not reached"
    return (f"{cell.steps_to_target:.0f} steps, {fmt(cell.seconds_to_target, 2)} s "
            f"({cell.reached_rate:.0%} of seeds)")


def illustrative(summary: Summary) -> list[str]:
    shown = [t for t, m in summary.tasks.items() if m["illustrative"]]
    if not shown:
        return []
    lines = ["## Illustrative 2-D functions (not ranked)", "",
             "| | " + " | ".join(f"{t} (final f)" for t in shown) + " |",
             "|:--|" + "--:|" * len(shown)]
    for optimizer in summary.config.optimizers:
        cells = [summary.cells.get((t, optimizer)) for t in shown]
        lines.append(f"| **{optimizer}** | " + " | ".join(
            mean_pm(x.mean, x.ci, x.error) + f" (lr {x.lr:g})" if x else "–" for x in cells) + " |")
    return lines


# ------------------------------------------------------------------ the notes' table
# The table of the project's founding notes, whose Score column the bench fills.
NOTES_TABLE = Path(__file__).with_name("notes_table.md")


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def fill_notes(text: str, summary: Summary) -> str:
    """Replace the Score cell of every row of the table whose first cell is ``**Name**``.

    A row whose name is a benchmarked optimizer gets its stars and mean rank; any other row's
    score is cleared to "–" (a star without a measurement behind it is not kept). The score
    formula is added under the table.
    """
    by_key = {_key(o): o for o in summary.config.optimizers}
    by_key.update(
        {_key(alias): o for o in summary.config.optimizers for alias in _aliases(o)}
    )
    lines, score_col, in_table, done = text.splitlines(), None, False, False
    out = []
    for line in lines:
        cells = line.split("|")
        if line.lstrip().startswith("|") and any(c.strip() == "Score" for c in cells):
            score_col = [c.strip() for c in cells].index("Score")
            in_table = True
        elif in_table and not line.lstrip().startswith("|"):
            in_table = False
            if not done:
                out.append("")
                out.append(f"Score measured by `optimkit bench` ({summary.config.seeds} seeds, "
                           f"{summary.config.budget} lrs each, optimkit {summary.config.version})"
                           f": {STAR_FORMULA}")
                done = True
        elif in_table and score_col is not None and len(cells) > score_col:
            match = re.match(r"\s*\*\*(.+?)\*\*", cells[1])
            if match:
                name = by_key.get(_key(match.group(1)))
                cells[score_col] = f" {_score_text(summary, name)} "
                line = "|".join(cells)
        out.append(line)
    if score_col is None:
        raise ValueError("notes: no markdown table with a 'Score' column found")
    return "\n".join(out) + "\n"


def _aliases(name: str) -> tuple[str, ...]:
    try:
        return registry.get(name).aliases
    except ValueError:  # a database from a build that registered other names
        return ()


def _score_text(summary: Summary, name: str | None) -> str:
    if name is None or math.isnan(summary.mean_rank[name]):
        return "–"
    return (f"{_stars(summary.stars[name])} (rank {fmt(summary.mean_rank[name], 2)}"
            f"/{len(summary.config.optimizers)})")


# ------------------------------------------------------------------ report.html
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1200px;color:#1d232a;padding:0 1rem;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.86rem;margin:.6rem 0}
th,td{border:1px solid #d8dde3;padding:.3rem .55rem;text-align:right;white-space:nowrap}
th{background:#f3f5f8}td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafbfc}.stars{color:#c98a00;letter-spacing:1px}
.note{color:#5a6470;font-size:.9rem}figure{margin:1rem 0;display:inline-block}
figure img{max-width:100%;border:1px solid #e3e6ea}figcaption{font-size:.85rem;color:#5a6470}
code{background:#f3f5f8;padding:0 .25rem;border-radius:3px}#tasks td{text-align:left}
"""


def _table(head: list[str], body: list[list[str]], table_id: str = "") -> str:
    ident = f' id="{table_id}"' if table_id else ""
    out = [f"<table{ident}><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
           + "</tr></thead><tbody>"]
    for row in body:
        out.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    return "\n".join(out) + "</tbody></table>"


def page(summary: Summary, pictures: list[Path]) -> str:
    c = summary.config
    real = summary.real_tasks
    order = sorted(c.optimizers, key=lambda o: (_nan_last(summary.mean_rank[o]), o))
    body = []
    for optimizer in order:
        cells = [summary.cells.get((t, optimizer)) for t in real]
        body.append([
            f"<b>{html.escape(optimizer)}</b>",
            f'<span class="stars" title="{summary.stars[optimizer]} of 3 stars">'
            f"{_html_stars(summary.stars[optimizer])}</span>",
            fmt(summary.mean_rank[optimizer], 2),
            *[html.escape(mean_pm(x.mean, x.ci, x.error)) + f"<br><small>lr {x.lr:g}</small>" if x
              else "–" for x in cells],
            *[html.escape(_reach(x)) for x in cells],
            fmt(_avg([x.divergence_rate for x in cells if x]), 2),
            fmt(_avg([x.step_time_us for x in cells if x]), 1),
            fmt(_avg([x.state_bytes_per_param for x in cells if x]), 1),
        ])
    head = ["optimizer", "score", "mean rank",
            *[f"{t}: {summary.tasks[t]['metric']}" for t in real],
            *[f"{t}: to target" for t in real], "diverged", "µs/step", "state B/param"]
    tasks_body = [[html.escape(t), html.escape(m["description"]), html.escape(m["metric"]),
                   ("≥ " if m["higher_is_better"] else "≤ ") + f"{m['target']:g}",
                   str(m["epochs"]), "illustrative" if m["illustrative"] else "ranked"]
                  for t, m in summary.tasks.items()]
    figures = "\n".join(_figure(p) for p in pictures)
    grid = ", ".join(f"{lr:g}" for lr in lr_grid(c.budget))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>optimkit bench report</title><style>{_CSS}</style></head>
<body>
<h1>optimkit bench</h1>
<p class="note">optimkit {html.escape(c.version)} · device {html.escape(c.device)} ·
{len(c.optimizers)} optimizers · {len(c.tasks)} tasks · {c.seeds} seeds ·
tuning budget {c.budget} learning rates ({grid}) for every optimizer</p>
<h2>Leaderboard</h2>
{_table(head, body, "leaderboard")}
<p class="note"><b>Score.</b> {html.escape(STAR_FORMULA)}</p>
<p class="note"><i>{html.escape(CAVEAT)}</i></p>
<p class="note"><b>Protocol.</b> Every optimizer gets the same budget: the learning rates above,
one run each on seed 0, scored on a validation split; every other hyper-parameter stays at
its default. The best lr is then trained on seeds 1..{c.seeds} and scored on the test split;
cells show the mean ± 95 % Student-t interval. A run diverges when its loss is NaN/inf or
exceeds 1000× its first value. Step time is the optimizer's <code>step()</code> alone; memory
is the bytes of optimizer state per parameter.</p>
<h2>Tasks</h2>
{_table(["task", "description", "metric", "target", "epochs", "kind"], tasks_body, "tasks")}
<h2>Plots</h2>
{figures}
</body></html>
"""


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = html.escape(path.stem.replace("-", " "))
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
            f"<figcaption>{caption}</figcaption></figure>")
