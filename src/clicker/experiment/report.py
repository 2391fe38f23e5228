"""The HTML report of `clicker compare`: learning curves, the statistics table, run cost and an
episode gallery, in one self-contained file.

Why one file: a comparison is read on a laptop, in a browser tab, often after copying it off the
training box. So report.html carries everything inline (CSS, PNGs as base64 data URIs, a tiny
script) and opens from disk with no network. The PNGs are also written next to it for slides.

Per task it shows, top to bottom:
1. held-out success against world tokens, one line per method: the mean over seeds on a common
   grid of 201 points, shaded with the 95 % stratified-bootstrap CI of that mean (seeds evaluate at
   different world-token counts, so each curve is read off the grid first); methods that dream get
   a second panel against imagined tokens;
2. the table of few-seed statistics (`stats.py`) that `clicker compare` computed;
3. what a run cost: median wall clock and peak memory;
4. the episode gallery: sample episodes with every credit channel drawn on the tokens (red =
   blamed, green = credited), so one can see *where* a method clicked, not only whether it helped.

Figures go through `matplotlib.figure.Figure` and its Agg renderer, never pyplot: no global
backend is switched, no window opens, and nothing leaks between calls.

`results` is the dict `clicker compare` writes to results.json; the module docstring of
`clicker.experiment.compare` and `write_report` describe its keys.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from clicker.experiment.results import mixed_weights_warning, unfinished_note
from clicker.experiment.stats import interpolate_curve, stratified_bootstrap_ci

GRID_POINTS = 201
MAX_TOKENS = 600  # gallery episodes longer than this are cut, with a note
NEG, POS = (215, 48, 39), (26, 152, 80)  # diverging ends: blamed (red) and credited (green)
DPI = 160  # PNGs are drawn at DPI and shown at 100 px per inch: sharp on high-density screens


def _num(x: Any) -> float | None:
    """A finite float, or None for null / inf / nan (all of which the table shows as words)."""
    if x is None or isinstance(x, bool):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _human(x: float) -> str:
    """12000 -> '12k', 1_500_000 -> '1.5M': readable axis ticks and budgets."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def _fmt(x: Any, digits: int = 3, null: str = "—", tokens: bool = False) -> str:
    v = _num(x)
    if v is None:
        return null
    return _human(v) if tokens else f"{v:.{digits}g}" if abs(v) >= 1000 else f"{v:.{digits}f}"


def _with_ci(stat: dict | None, tokens: bool = False, null: str = "—") -> str:
    """'IQM [low, high]'; for tokens-to-target a null IQM means never reached, a null bound inf."""
    if not stat:
        return "—"
    point = _fmt(stat.get("iqm", stat.get("value")), 2, null, tokens)
    ci = stat.get("ci")
    if not ci:
        return point
    bound = "inf" if tokens else "—"
    low, high = (_fmt(c, 2, bound, tokens) for c in ci)
    return f'{point} <span class="ci">[{low}, {high}]</span>'


def _file_stem(task: str) -> str:
    """The task name as a file name: characters other than letters, digits, '.', '_', '-' -> '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", task) or "task"


def _png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _colours(methods: list[str]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


def _mean_ci(xs_list: list[list[float]], ys_list: list[list[float]], grid: np.ndarray):
    """Mean over seeds of curves read at `grid` (G,), with its 95 % bootstrap CI -> Interval."""
    ys = np.stack([interpolate_curve(x, y, grid) for x, y in zip(xs_list, ys_list)], axis=-1)
    return stratified_bootstrap_ci({"c": ys}, lambda d: d["c"].mean(-1), reps=1000)  # (G, seeds)


def _plot_curves(task: str, t: dict, methods: list[str], colours: dict, path: Path) -> float:
    """Learning curves of one task -> `path`; returns the figure's width in inches."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    curves = {m: [c for c in t.get("curves", {}).get(m, []) if c.get("world_tokens")]
              for m in methods}
    curves = {m: cs for m, cs in curves.items() if cs}
    # a dreaming method whose dreams were all gated off has no imagined tokens to plot
    dreamers = {m: [c for c in cs if any(c.get("imagined_tokens") or ())]
                for m, cs in curves.items()}
    dreamers = {m: cs for m, cs in dreamers.items() if cs}
    budget = _num(t.get("budget")) or max(
        (max(c["world_tokens"]) for cs in curves.values() for c in cs), default=1.0)
    models = {m: [c for c in cs if len(c.get("wm_obs_exact") or []) > 1]
              for m, cs in curves.items()}
    models = {m: cs for m, cs in models.items() if cs}
    extra = bool(dreamers) + bool(models)
    width = 7.5 + 3.5 * extra
    fig = Figure(figsize=(width, 4.2))
    axes = fig.subplots(1, 1 + extra, squeeze=False,
                        gridspec_kw={"width_ratios": [2] + [1] * extra} if extra else None)
    panels = [(axes[0, 0], "world_tokens", "success", curves, budget, "world tokens", "-")]
    if dreamers:
        top = max(max(c["imagined_tokens"]) for cs in dreamers.values() for c in cs) or 1.0
        panels.append((axes[0, 1], "imagined_tokens", "success", dreamers, top,
                       "imagined tokens", "-"))
    if models:  # the world model's held-out accuracy over training, one line style a measure
        for x, y, ls in (("wm_world_tokens", "wm_obs_exact", "-"),
                         ("wm_event_tokens", "wm_event_recall", "--"),
                         ("wm_replay_tokens", "wm_replay_match", ":")):
            have = {m: [c for c in cs if len(c.get(y) or []) > 1] for m, cs in models.items()}
            panels.append((axes[0, extra], x, y, {m: cs for m, cs in have.items() if cs}, budget,
                           "world tokens", ls))
    for ax, key, ykey, by_method, end, label, ls in panels:
        grid = np.linspace(0.0, end, GRID_POINTS)
        for m, cs in by_method.items():
            ci = _mean_ci([c[key] for c in cs], [c[ykey] for c in cs], grid)
            # only the first panel has a legend; the others' titles name their lines
            ax.plot(grid, ci.point, color=colours[m], lw=2, ls=ls, label=f"{m} (n={len(cs)})")
            ax.fill_between(grid, ci.low, ci.high, color=colours[m], alpha=0.18 if ls == "-"
                            else 0.08, lw=0)
        if _num(t.get("target")) is not None and ykey == "success":
            ax.axhline(t["target"], color="0.45", ls="--", lw=1.2, label=f"target {t['target']:g}")
        ax.set_xlim(0, end)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(label)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _human(x)))
        ax.grid(alpha=0.25)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    axes[0, 0].set_ylabel("held-out success")
    axes[0, 0].set_title(f"{task}: mean over seeds, 95% bootstrap CI", fontsize=11, loc="left")
    if dreamers:
        axes[0, 1].set_title("dreaming methods", fontsize=11, loc="left")
    if models:
        axes[0, extra].set_title("world model, held out:\nexact observations (solid),\n"
                                 "rewards and ends right (dashed),\nepisodes replayed right "
                                 "(dotted)", fontsize=10, loc="left")
    if curves:
        axes[0, 0].legend(frameon=False, fontsize=9, loc="best")
    else:
        axes[0, 0].text(0.5, 0.5, "no learning curves recorded", ha="center",
                        transform=axes[0, 0].transAxes, color="0.4")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    return width


def _plot_cost(task: str, t: dict, methods: list[str], colours: dict, path: Path) -> float:
    """Bars of median wall clock per run and median peak memory -> `path`; returns the width."""
    from matplotlib.figure import Figure

    res = {m: (t["methods"][m].get("resources") or {}) for m in methods}

    def med(m: str, key: str) -> float | None:
        return _num((res[m].get(key) or {}).get("median"))

    cuda = any(med(m, "peak_cuda_mb") is not None for m in methods)
    panels = [("wall_s", "wall clock per run (median s)")]
    panels += [("peak_rss_mb", "peak RSS (median MB)")]
    panels += [("peak_cuda_mb", "peak CUDA memory (median MB)")] if cuda else []
    width = 3.6 * len(panels)
    fig = Figure(figsize=(width, 2.9))
    axes = fig.subplots(1, len(panels), squeeze=False)
    x = np.arange(len(methods))
    for ax, (key, title) in zip(axes[0], panels):
        vals = [med(m, key) for m in methods]
        ax.bar(x, [v or 0.0 for v in vals], color=[colours[m] for m in methods], width=0.65)
        for xi, v in zip(x, vals):
            ax.annotate("n/a" if v is None else _human(v), (xi, v or 0.0), ha="center",
                        va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(x, methods, rotation=20 if len(methods) > 3 else 0, fontsize=9)
        ax.set_title(title, fontsize=10, loc="left")
        ax.margins(y=0.15)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    fig.suptitle(f"{task}: cost per run", fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    return width


def _table(t: dict, methods: list[str], baseline: str | None) -> str:
    """The statistics table of one task; the baseline row and the fewest tokens are highlighted."""
    stats = t.get("methods") or {}
    ttt = {m: _num((stats[m].get("tokens_to_target") or {}).get("iqm")) for m in methods}
    # only a method that reached the target in some seed can be fewest: an IQM of seeds that
    # never reached it is the 2x-budget convention, and a tie of those is no winner
    best = min((v for m, v in ttt.items() if v is not None and stats[m].get("reached")),
               default=None)
    b = html.escape(baseline or "baseline")
    head = ["method", "reached", "world tokens to target<br>IQM [95% CI]", f"× {b}<br>[CI]",
            f"P(fewer tokens<br>than {b})", "final success<br>IQM [CI]", "AUC<br>IQM [CI]",
            "wall clock / run<br>(median s)", "s / iteration<br>(median)",
            "peak memory<br>(median MB)"]
    rows = []
    for m in methods:
        s = stats[m]
        res = s.get("resources") or {}
        med = {k: (res.get(k) or {}).get("median") for k in res}
        ttt_cell = _with_ci(s.get("tokens_to_target"), tokens=True, null="never")
        best_here = best is not None and ttt[m] == best
        mem = _fmt(med.get("peak_rss_mb"), 0, tokens=True)
        if _num(med.get("peak_cuda_mb")) is not None:
            mem += f' RSS<br>{_fmt(med["peak_cuda_mb"], tokens=True)} CUDA'
        poi = (s.get("poi_over_grpo") or {}).get("tokens_to_target")
        is_base = m == baseline
        cells = [
            html.escape(m) + (' <span class="tag">baseline</span>' if is_base else ""),
            f'{s.get("reached", "—")}/{s.get("seeds", "—")}',
            f'<span class="{"best" if best_here else ""}">{ttt_cell}</span>',
            "—" if is_base else _with_ci(s.get("ratio_to_grpo"), null="n/a"),
            "—" if is_base else _fmt(poi, 2),
            _with_ci(s.get("final_success")), _with_ci(s.get("auc")),
            _fmt(med.get("wall_s"), 1), _fmt(med.get("s_per_iteration"), 2), mem,
        ]
        cls = " ".join(c for c in ("baseline" if is_base else "", "bestrow" if best_here else "")
                       if c)
        rows.append(f'<tr class="{cls}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ('<table class="stats"><thead><tr>' + "".join(f"<th>{h}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _style(v: float, scale: float) -> str:
    """CSS colours of a token worth v, scaled to [-scale, scale]: a diverging background (red
    negative, white 0, green positive), white text where the background is dark."""
    x = 0.0 if scale <= 0 or not math.isfinite(v) else max(-1.0, min(1.0, v / scale))
    end = NEG if x < 0 else POS
    r, g, b = (round(255 + (c - 255) * abs(x)) for c in end)
    return f"background:#{r:02x}{g:02x}{b:02x}" + (";color:#fff" if abs(x) > 0.6 else "")


def _piece(text: str) -> str:
    """HTML of one token's text: escaped, newlines as a visible ⏎ and a real break."""
    return html.escape(text).replace("\n", '<span class="nl">⏎</span>\n')


def _episode(method: str, ep: dict) -> str:
    pieces, action = ep.get("pieces") or [], ep.get("action") or []
    credit = ep.get("credit") or {}
    n = len(pieces)
    for name, seq in [("action", action)] + list(credit.items()):
        if len(seq) != n:
            raise ValueError(f"gallery episode of {method!r} (seed {ep.get('seed')}, iteration "
                             f"{ep.get('iteration')}): {name!r} has {len(seq)} values for {n} "
                             "pieces; every per-token list must be aligned with 'pieces'")
    ok = "✓" if ep.get("success") else "✗"
    head = (f'<div class="ephead"><b>{html.escape(method)}</b> · seed {ep.get("seed", "—")} · '
            f'iteration {ep.get("iteration", "—")} · reward {_fmt(ep.get("reward"), 2)} · '
            f'success <span class="{"win" if ep.get("success") else "loss"}">{ok}</span>'
            f' · {sum(map(bool, action))} action tokens of {n}</div>')
    shown = range(min(n, MAX_TOKENS))
    more = (f'<span class="more">… ({n - MAX_TOKENS} more tokens)</span>'
            if n > MAX_TOKENS else "")
    names = sorted(credit, key=lambda c: (c != "advantage", c))
    lines = []
    for name in names:
        vals = [float("nan") if v is None else float(v) for v in credit[name]]
        acts = [abs(v) for v, a in zip(vals, action) if a and math.isfinite(v)]
        scale = max(acts, default=0.0)
        spans = []
        for i in shown:
            if action[i]:
                spans.append(f'<span class="a" style="{_style(vals[i], scale)}" '
                             f'title="{html.escape(name)} = {vals[i]:.5g}">'
                             f"{_piece(pieces[i])}</span>")
            else:
                spans.append(f'<span class="o">{_piece(pieces[i])}</span>')
        lines.append(f'<div class="chan"><div class="cname">{html.escape(name)}'
                     f'<small>max |v| {scale:.3g}</small></div>'
                     f'<div class="text">{"".join(spans)}{more}</div></div>')
    if not lines:
        lines.append('<p class="note">this episode carries no credit channels</p>')
    return f'<div class="episode">{head}{"".join(lines)}</div>'


def _gallery(t: dict, methods: list[str], section_id: str) -> str:
    gal = t.get("gallery") or {}
    legend = ('<div class="legend"><span>blamed</span><span class="bar"></span><span>credited'
              '</span><span class="note">each channel scaled by its max |value| over the '
              'episode\'s action tokens; <span class="o">grey text</span> = observation / prompt '
              'tokens (no credit); hover a token for its exact value</span></div>')
    parts = [f'<section class="gallery" id="{section_id}"><h3>Episode gallery</h3>{legend}']
    for m in methods + [m for m in gal if m not in methods]:
        eps = gal.get(m) or []
        parts.append(f'<h4>{html.escape(m)}</h4>')
        parts += [_episode(m, ep) for ep in eps] or ['<p class="note">no sample episodes</p>']
    return "".join(parts) + "</section>"


CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#222;
 margin:0;background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:20px 28px 60px;background:#fff}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:21px;margin:36px 0 8px;border-bottom:2px solid
 #ddd;padding-bottom:4px}h3{font-size:17px;margin:22px 0 6px}h4{font-size:15px;margin:16px 0 4px}
.meta{color:#555;font-size:14px}.meta b{color:#222}.note{color:#666;font-size:13px}
img{max-width:100%;height:auto;display:block;margin:8px 0}
table.stats{border-collapse:collapse;font-size:13px;margin:10px 0;width:100%}
.stats th,.stats td{padding:5px 8px;border-bottom:1px solid #e4e4e4;text-align:right;
 vertical-align:top}.stats th{background:#f3f3f3;font-weight:600;font-size:12px}
.stats th:first-child,.stats td:first-child{text-align:left}
.stats tr.baseline td{background:#eef3fb}.best{font-weight:700;color:#0b6b33}
.stats tr.bestrow td:first-child{box-shadow:inset 4px 0 #1a9850}
.ci{color:#777;font-size:12px}.tag{font-size:11px;color:#3465a4;border:1px solid #9db4d8;
 border-radius:3px;padding:0 3px}
.episode{border:1px solid #e2e2e2;border-radius:6px;margin:8px 0 14px;padding:6px 10px}
.ephead{font-size:13px;color:#444;margin-bottom:4px}.win{color:#1a9850}.loss{color:#d73027}
.chan{display:grid;grid-template-columns:170px 1fr;gap:10px;border-top:1px dashed #eee;
 padding:3px 0}.cname{font-size:12px;color:#333;font-weight:600;word-break:break-all}
.cname small{display:block;font-weight:400;color:#888}
.text{font:13px/1.6 ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;
 word-break:break-word}.text .o{color:#9a9a9a}.nl{color:#b0b0b0}.more{color:#888;
 font-style:italic}.a{border-radius:2px}
.legend{display:flex;gap:8px;align-items:center;font-size:12px;color:#444;flex-wrap:wrap}
.legend .bar{display:inline-block;width:160px;height:12px;border:1px solid #ccc;
 background:linear-gradient(to right,#d73027,#fff,#1a9850)}.legend .o{color:#9a9a9a}
details{margin:8px 0}summary{cursor:pointer;color:#555;font-size:13px}
pre{font-size:12px;background:#f6f6f6;padding:8px;overflow:auto}
nav a{margin-right:14px}
"""

# Sets body[data-images-loaded] once every <img> decoded (a headless browser test reads it).
SCRIPT = """(function(){var imgs=Array.prototype.slice.call(document.images);
function check(){if(imgs.every(function(i){return i.complete&&i.naturalWidth>0;})){
document.body.dataset.imagesLoaded=String(imgs.length);}}
imgs.forEach(function(i){i.addEventListener('load',check);});
window.addEventListener('load',check);check();})();"""


NOTE = ("Curves: held-out success against world tokens (tokens the real environment produced "
        "or read), mean over seeds with a shaded 95% stratified-bootstrap CI. Table: IQM = "
        "interquartile mean over seeds with a 95% bootstrap CI; tokens to target is 'never' "
        "when no seed reached it, and a CI bound is 'inf' when resampled seeds may never reach "
        "it; P(fewer tokens) is the probability that a run of the method needs fewer world "
        "tokens than a run of the baseline. The fewest tokens to target is in green.")


def _header(results: dict, tasks: dict, methods: list[str]) -> list[str]:
    budgets = ", ".join(f"{html.escape(k)} {_human(v['budget'])}" for k, v in tasks.items()
                        if _num(v.get("budget")) is not None) or "—"
    meta = [f"methods <b>{html.escape(', '.join(methods))}</b>",
            f"seeds <b>{html.escape(str(results.get('seeds', '—')))}</b>",
            f"baseline <b>{html.escape(str(results.get('baseline') or 'none'))}</b>",
            f"world-token budget <b>{budgets}</b>"]
    if results.get("created"):
        meta.append(f"generated <b>{html.escape(str(results['created']))}</b>")
    nav = "".join(f'<a href="#task-{i}">{html.escape(k)}</a>' for i, k in enumerate(tasks))
    return ["<h1>Clicker comparison</h1>", f'<p class="meta">{" · ".join(meta)}</p>',
            f'<p class="note">{html.escape(NOTE)}</p>', f"<nav>{nav}</nav>"]


def _img(cls: str, path: Path, width_in: float, alt: str) -> str:
    return (f'<img class="{cls}" src="{_png_uri(path)}" width="{round(width_in * 100)}" '
            f'alt="{html.escape(alt)}">')


def _task_section(i: int, task: str, t: dict, methods: list[str], baseline: str | None,
                  colours: dict, out_dir: Path) -> str:
    stem = _file_stem(task)
    curves_png, cost_png = out_dir / f"{stem}.png", out_dir / f"{stem}_cost.png"
    w_curves = _plot_curves(task, t, methods, colours, curves_png)
    w_cost = _plot_cost(task, t, methods, colours, cost_png)
    meta = (f'budget <b>{_fmt(t.get("budget"), tokens=True)}</b> world tokens · target success '
            f'<b>{_fmt(t.get("target"), 2)}</b>')
    parts = [f'<section class="task" id="task-{i}"><h2>{html.escape(task)}</h2>',
             f'<p class="meta">{meta}</p>',
             _img("curves", curves_png, w_curves, f"learning curves of {task}"),
             _table(t, methods, baseline),
             (f'<p class="note"><b>{html.escape(mixed_weights_warning(t["mixed_weights"]))}'
              '</b></p>' if t.get("mixed_weights") else ""),
             (f'<p class="note">{html.escape(unfinished_note(t["unfinished"]))}</p>'
              if t.get("unfinished") else ""),
             _img("cost", cost_png, w_cost, f"cost per run of {task}"),
             _gallery(t, methods, "gallery" if i == 0 else f"gallery-{i}")]
    if t.get("config"):
        parts.append(_details("config", t["config"]))
    return "".join(parts) + "</section>"


def _details(summary: str, obj: Any) -> str:
    text = html.escape(json.dumps(obj, indent=2, default=str))
    return f"<details><summary>{summary}</summary><pre>{text}</pre></details>"


def write_report(out_dir: Path, results: dict) -> Path:
    """Write `<task>.png` (learning curves), `<task>_cost.png` and a self-contained report.html
    into out_dir; return the path of report.html.

    results: the dict `clicker compare` writes to results.json: "methods" (order of lines and
    rows), "seeds", "baseline" (the method ratios and P(improvement) are against; may be None),
    optional "created", and "tasks": task -> {"budget", "target", "methods": method -> the
    statistics (tokens_to_target / final_success / auc as {"per_seed", "iqm", "ci"}, "reached",
    "seeds", optional "ratio_to_grpo", "poi_over_grpo", "resources"), "curves": method -> list of
    {"seed", "world_tokens", "success", "imagined_tokens"}, optional "gallery": method -> list of
    episodes {"seed", "iteration", "reward", "success", "pieces", "action", "credit"}, optional
    "config"}. Nulls (never reached, no CUDA, one seed) are shown as words, not errors.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = results.get("tasks") or {}
    if not tasks:
        raise ValueError("results has no 'tasks': nothing to report (is this a results.json of "
                         "`clicker compare`?)")
    all_methods = list(results.get("methods") or [])
    for t in tasks.values():
        all_methods += [m for m in (t.get("methods") or {}) if m not in all_methods]
    colours = _colours(all_methods)
    body = _header(results, tasks, all_methods)
    for i, (task, t) in enumerate(tasks.items()):
        methods = [m for m in all_methods if m in (t.get("methods") or {})]
        body.append(_task_section(i, task, t, methods, results.get("baseline"), colours, out_dir))
    if results.get("overall"):
        body.append(_details("overall (all tasks pooled)", results["overall"]))
    page = ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>Clicker comparison</title><style>{CSS}</style></head><body><main>"
            + "\n".join(body) + f"</main><script>{SCRIPT}</script></body></html>\n")
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


__all__ = ["write_report"]
