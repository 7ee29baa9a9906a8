"""report.py: the listening report (in headless Chromium: it plays, fits a 1024-px window,
shows WERs as percentages) and the training-curve plot."""
from __future__ import annotations

import json
import os
import re
import subprocess

import numpy as np
import pytest
import soundfile as sf
from matplotlib.image import imread

import audio
import report

CHROMIUM = "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                    reason="chromium not installed (apt-get install -y chromium)")
SECONDS = {"p0": 0.5, "p1": 1.25, "long/p2": 2.0}  # ids are paths relative to the report
SUMMARY = {"kind": "test report", "wer": 0.15151515151515152, "wer_resynth_floor": 0.0625,
           "duration_error": 0.16009236032151886, "n_prompts": 3, "vocoder": "griffinlim"}


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    """A report of three prompts: wavs of known lengths, long mels (a 10 s mel draws an image
    far wider than the window at its natural size), one transcript per WER band."""
    out = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    rows, mels = [], {}
    for i, (pid, seconds) in enumerate(SECONDS.items()):
        os.makedirs(os.path.dirname(out / f"{pid}.wav"), exist_ok=True)
        sf.write(out / f"{pid}.wav", rng.normal(0, 0.1, int(seconds * audio.SAMPLE_RATE)),
                 audio.SAMPLE_RATE)
        mel = rng.normal(-4, 1, (861 * (i + 1), audio.N_MELS)).astype(np.float32)  # (n, m)
        mels[pid] = (mel, mel if i else None)
        rows.append({"id": pid, "text": "one two three four", "hypothesis": "one two three",
                     "wer": i / 4, "errors": i, "ref_words": 4})
    report.write_report(str(out), rows, SUMMARY, mels=mels)
    return out


def chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio",
         f"--user-data-dir={tmp_path / 'profile'}", "--autoplay-policy=no-user-gesture-required",
         "--virtual-time-budget=5000", *args], capture_output=True, text=True, timeout=120)


def test_mel_images_are_written_beside_the_wavs(report_dir):
    # 80 dpi: 4 inches a panel, 1.6 high; the ground truth doubles the width
    assert imread(report_dir / "p0.png").shape[:2] == (128, 320)
    assert imread(report_dir / "p1.png").shape[:2] == (128, 640)


def test_summary_wers_and_errors_are_percentages(report_dir):
    page = (report_dir / "report.html").read_text()
    assert "<th>wer</th><td>15.2%</td>" in page
    assert "<th>wer_resynth_floor</th><td>6.2%</td>" in page
    assert "<th>duration_error</th><td>16.0%</td>" in page
    assert "<th>n_prompts</th><td>3</td>" in page
    assert "0.1515" not in page and "0.1600" not in page
    assert re.findall(r"<td class=\"(?:bad)?\">([^<]*)</td>", page) == [
        "0.0% (0/4)", "25.0% (1/4)", "50.0% (2/4)"]


@needs_chromium
def test_report_plays_and_fits_a_1024_px_window_in_headless_chromium(report_dir, tmp_path):
    # A copy of the page with a probe that writes what the browser laid out into the DOM.
    probe = """<script>window.addEventListener("load", () => {
      const widths = [...document.images].map(i => Math.ceil(i.getBoundingClientRect().right));
      document.body.dataset.layout = JSON.stringify({
        page: document.documentElement.scrollWidth, window: window.innerWidth,
        images: widths, loaded: [...document.images].every(i => i.naturalWidth > 0)}); });
    </script></body>"""
    page = (report_dir / "report.html").read_text().replace("</body>", probe)
    (report_dir / "probe.html").write_text(page)
    dom = chromium(tmp_path, "--window-size=1024,768", "--dump-dom",
                   f"file://{report_dir / 'probe.html'}").stdout
    durations = {pid: float(d) for pid, d in re.findall(r'id="dur-([^"]+)">([\d.]+) s<', dom)}
    assert durations == pytest.approx(SECONDS, abs=0.01)  # the browser read each wav
    layout = json.loads(re.search(r"data-layout=\"([^\"]+)\"", dom).group(1).replace("&quot;", '"'))
    assert layout["window"] == 1024 and layout["loaded"] and len(layout["images"]) == 3
    assert layout["page"] <= 1024, layout  # no horizontal scrolling
    assert max(layout["images"]) <= 1024, layout
    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1024,768",
             f"file://{report_dir / 'report.html'}")
    assert imread(shot).shape[:2] == (768, 1024)


def test_plot_run_draws_the_curves_it_was_given(tmp_path):
    records = [{"step": s, "train/loss": 2.0 / s, "time/step_sec": 0.2} for s in (10, 20, 30)]
    records += [{"step": 30, "val/flow_loss": 0.4}, {"step": 30, "eval/wer": 0.5}]
    drawn = report.plot_run(records, str(tmp_path / "run.png"), "a run")
    assert drawn == {"train/loss": 3, "val/flow_loss": 1, "eval/wer": 1,
                     "eval/wer_oracle_duration": 0, "time/step_sec": 3}
    assert imread(tmp_path / "run.png").shape[2] in (3, 4)
