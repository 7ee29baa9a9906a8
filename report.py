"""What a person looks at: the HTML listening report and PNG plots (mels, training curves).

Shape letters: n mel frames, m mel bands.
"""
from __future__ import annotations

import html
import os
import urllib.parse

import numpy as np

import audio


# --- report ------------------------------------------------------------------------------------
def save_mel_image(path: str, mel: np.ndarray, gt_mel: np.ndarray | None = None) -> None:
    """Generated log-mel (n, m), and the ground truth beside it when given, as a PNG."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    panels = [("generated", mel)] + ([("ground truth", gt_mel)] if gt_mel is not None else [])
    fig = Figure(figsize=(4 * len(panels), 1.6), layout="tight")
    for ax, (title, m) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        draw_mel(ax, m, title)
    fig.savefig(path, dpi=80)


def draw_mel(ax, mel: np.ndarray, title: str = "") -> None:
    """One log-mel (n, m) on a matplotlib axis. The colour scale is fixed (silence .. 2), so
    images of different utterances and models compare by eye."""
    ax.imshow(np.asarray(mel).T, origin="lower", aspect="auto", interpolation="nearest",
              vmin=audio.SILENCE_LOGMEL, vmax=2.0)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([]), ax.set_yticks([])


# Sized for a 1024-px window: the page is at most 1000 px wide, each mel image gets a row of
# its own under its prompt and shrinks to the page, so the text column keeps its width.
_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title><style>
body {{ font-family: sans-serif; max-width: 1000px; margin: 8px auto; padding: 0 8px; }}
table {{ border-collapse: collapse; }} #prompts {{ width: 100%; }} .bad {{ color: #b00; }}
td, th {{ border: 1px solid #ccc; padding: 4px; vertical-align: top; font-size: 13px; }}
img {{ max-width: 100%; height: auto; }} audio {{ width: 250px; }}
</style></head><body><h2>{title}</h2><table id="summary">{summary}</table>{figures}<h3>Prompts</h3>
<table id="prompts"><tr><th>id</th><th>audio</th><th>text / <i>transcript</i></th><th>WER</th></tr>
{rows}
</table>
<script>  // show each clip's length once the browser has read it (headless tests read it too)
document.querySelectorAll("audio").forEach(a => a.addEventListener("loadedmetadata", () => {{
  document.getElementById("dur-" + a.dataset.id).textContent = a.duration.toFixed(2) + " s"; }}));
</script></body></html>
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _report_row(row: dict, image: str | None) -> str:
    pid, hyp, wer = _e(row["id"]), row.get("hypothesis"), row.get("wer")
    wer_text = "" if wer is None else f"{100 * wer:.1f}% ({row['errors']}/{row['ref_words']})"
    hyp = "(no ASR)" if hyp is None else _e(hyp) or "(nothing heard)"
    mel_row = f'<tr><td colspan="4"><img src="{_e(image)}"></td></tr>' if image else ""
    return (f'<tr><td>{pid}</td><td><audio controls preload="metadata" data-id="{pid}" '
            f'src="{_e(urllib.parse.quote(row["id"]))}.wav"></audio><br>'
            f'<span id="dur-{pid}"></span></td><td>{_e(row["text"])}<br><i>{hyp}</i></td>'
            f'<td class="{"bad" if (wer or 0) > 0.3 else ""}">{wer_text}</td></tr>{mel_row}')


def _summary_value(key: str, value) -> str:
    """A summary entry as shown: WERs and relative errors (fractions in the JSON) as
    percentages."""
    if ("wer" in key or key.endswith("_error")) and isinstance(value, float):
        return f"{100 * value:.1f}%"
    return _e(value)


def write_report(out_dir: str, rows: list[dict], summary: dict, mel_images: bool = True,
                 mels: dict | None = None, figures: tuple[str, ...] = ()) -> str:
    """out_dir/report.html beside the wavs: opens from disk, needs no network. Row ids are
    paths relative to out_dir (<id>.wav, <id>.png). mels: {id: (generated (n, m), ground
    truth (n, m) or None)} to draw <id>.png; figures: more PNGs shown under the summary."""
    for pid, (mel, gt) in (mels or {}).items() if mel_images else ():
        save_mel_image(os.path.join(out_dir, f"{pid}.png"), mel, gt)
    images = {r["id"]: f"{r['id']}.png" for r in rows
              if os.path.exists(os.path.join(out_dir, f"{r['id']}.png"))}
    summary_html = "".join(f"<tr><th>{_e(k)}</th><td>{_summary_value(k, v)}</td></tr>"
                           for k, v in summary.items())
    figures_html = "".join(f'<p><img src="{_e(f)}"></p>' for f in figures)
    page = _PAGE.format(title=_e(summary.get("kind", "evaluation")), summary=summary_html,
                        figures=figures_html,
                        rows="\n".join(_report_row(r, images.get(r["id"])) for r in rows))
    with open(os.path.join(out_dir, "report.html"), "w", encoding="utf-8") as f:
        f.write(page)
    return f.name


# --- plots -------------------------------------------------------------------------------------
def plot_run(records: list[dict], path: str, title: str = "") -> dict:
    """Training loss, eval WER and step time against step (one PNG) from metrics.jsonl
    records; returns the plotted series' lengths, so a caller can check what was drawn."""
    return plot_runs({"run": records}, path, title)["run"]


def plot_runs(runs: dict[str, list[dict]], path: str, title: str = "") -> dict:
    """plot_run for several runs on shared axes (labelled by run name when there are several),
    to compare them; returns {run name: plotted series' lengths}."""
    from matplotlib.figure import Figure
    keys = ("train/loss", "val/flow_loss", "eval/wer", "eval/wer_oracle_duration", "time/step_sec")
    series = {name: {key: [(r["step"], r[key]) for r in records
                           if isinstance(r.get(key), (int, float))] for key in keys}
              for name, records in runs.items()}
    fig = Figure(figsize=(12, 3.2), layout="tight")
    axes = fig.subplots(1, 3)
    for ax, panel_keys, label in ((axes[0], ("train/loss", "val/flow_loss"), "flow-matching loss"),
                                  (axes[1], ("eval/wer", "eval/wer_oracle_duration"), "WER"),
                                  (axes[2], ("time/step_sec",), "seconds / step")):
        for name, run in series.items():
            for key in panel_keys:
                if run[key]:
                    steps, values = zip(*run[key])
                    ax.plot(steps, values, marker="o" if len(steps) < 30 else None,
                            label=f"{name} {key}" if len(runs) > 1 else key, alpha=0.8)
        ax.set_xlabel("step"), ax.set_ylabel(label), ax.grid(alpha=0.3)
        if any(run[k] for run in series.values() for k in panel_keys):
            ax.legend(fontsize=8)
    axes[0].set_yscale("log"), axes[2].set_yscale("log")  # compilation makes the first steps slow
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=90)
    return {name: {key: len(points) for key, points in run.items()} for name, run in series.items()}
