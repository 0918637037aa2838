"""Prediction speed of every inference backend, side by side in one process on the same images.

A Unet/timm-efficientnet-b0 is trained briefly on the ISBI slices (``fastseg fit``, random init, so its
masks are like a real model's rather than noise; the fit also records each reduced-precision backend's
agreement with fp32 on its validation images, which ``auto`` reads) and exported as ``.pkl`` plus the
calibrated int8 ONNX (``fastseg export --format onnx --int8``). Then each backend runs ``fastseg
predict``'s whole path (decode, normalise, model, argmax, PNG writes) over ``--n`` 512x512 ISBI slices
(as RGB), batch 8: torch fp32 eager, torch bf16 (channels_last + autocast), ONNX Runtime fp32 (the
default backend before auto chose among these), ONNX Runtime int8, OpenVINO (when installed) and
``auto``, plus "main: onnx", ONNX Runtime fp32 through main's pre/post-processing before this change
(today's default). Every row runs once per round, interleaved, ``--rounds`` times; medians are reported,
with each backend's pixel agreement with the torch fp32 masks on these images and its load time (model
conversion, compilation, and for auto its probe). Bar: auto >= 1.8x today's default, >= 99.5% equal.

    PYTHONPATH=. python benchmarks/predict_speed.py --quick      # sanity check: 8 images, 2 rounds
    PYTHONPATH=. python benchmarks/predict_speed.py              # 32 images, 3 rounds
    PYTHONPATH=. python benchmarks/predict_speed.py --model exports/model.pkl   # an already trained model
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ISBI = ROOT.parent / "shared" / "data" / "isbi2012-membrane"
BAR_SPEED, BAR_AGREEMENT = 1.8, 0.995


class PeakRSS:
    """Peak resident memory (MiB) of this process while the block runs, sampled every 10 ms."""

    def __enter__(self):
        self.peak, self._stop = _rss(), threading.Event()
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def _rss() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def make_images(folder: Path, n: int, size: int, data: Path) -> list[Path]:
    """``n`` RGB images of size x size: ``data``'s images (cycled, as RGB) when present, else noise."""
    folder.mkdir(parents=True)
    srcs = sorted((data / "images").glob("*.png")) if (data / "images").is_dir() else []
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        if srcs:
            im = Image.open(srcs[i % len(srcs)]).convert("RGB").resize((size, size))
        else:
            im = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        out.append(folder / f"{i:03d}.png")
        im.save(out[-1])
    return out


def train_model(work: Path, data: Path, epochs: int, bs: int) -> Path:
    """A briefly trained model (.pkl, bundle, fit-time agreement) and its int8 ONNX beside it."""
    from fastseg.config import FitConfig
    from fastseg.pipeline import fit

    cfg = FitConfig(data=str(data), weights="none", bs=bs, epochs=epochs, lr=3e-3, export=str(work / "model.pkl"),
                    runs_dir=str(work / "runs"), progressive="off")
    res = fit(cfg, notify=lambda m: print(f"  fit: {m}", flush=True))
    print(f"  fit: valid mIoU {res.metrics['miou']:.3f} after {epochs} epochs", flush=True)
    return res.export


def ensure_int8(pkl: Path, calib: str | None) -> None:
    from fastseg import export_model
    from fastseg.export.quantize import int8_path_for

    if int8_path_for(pkl).is_file():
        return
    q = export_model(pkl, "onnx", int8=True, calib=calib).quantization
    print(f"  int8: {q['agreement']:.2%} of validation pixels as fp32; calibrated on {q['calibration']}", flush=True)


def main_path(predictor):
    """``predictor`` with main's pre/post-processing before this change (normalise out of place into a
    channels_last-strided tensor, softmax before the argmax): the "today's default" baseline row."""
    import dataclasses

    from fastseg.infer.predictor import Predictor

    class MainPredictor(Predictor):
        def _forward(self, batch, cfg):
            x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float().div_(255)
            return self._probs((x - self.mean) / self.std, cfg.tta)  # whole images: the benchmark's case

    fields = {f.name: getattr(predictor, f.name) for f in dataclasses.fields(predictor)}
    return MainPredictor(**{**fields, "mean": predictor.mean.flatten(), "std": predictor.std.flatten()})


def backends_to_run() -> list[str]:
    from fastseg.infer.backends import onnx_available, openvino_available

    names = ["torch", "torch-bf16"]
    if onnx_available():
        names += ["onnx", "onnx-int8"]
    if openvino_available():
        names.append("openvino")
    return names + ["auto"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="images per round [32]")
    ap.add_argument("--size", type=int, default=512, help="image side in pixels [512]")
    ap.add_argument("--bs", type=int, default=8, help="batch size [8]")
    ap.add_argument("--threads", type=int, default=0, help="torch/onnxruntime/openvino threads [0: torch's default]")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians reported [3]")
    ap.add_argument("--epochs", type=int, default=4, help="epochs of the quick fit [4]")
    ap.add_argument("--data", help="data folder to train on and take images from [ISBI if present, else ./data]")
    ap.add_argument("--model", help="use this trained .pkl (its int8 ONNX is made beside it when missing)")
    ap.add_argument("--calib", help="calibration images for the int8 export [the model's training images]")
    ap.add_argument("--quick", action="store_true", help="8 images, 2 rounds, a 1-epoch fit")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.rounds, args.epochs = 8, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT))
    import warnings

    warnings.filterwarnings("ignore")
    from fastseg.config import PredictConfig
    from fastseg.infer.predictor import load, predict_paths

    with tempfile.TemporaryDirectory(prefix="fastseg-bench-") as tmp:
        work = Path(tmp)
        data = Path(args.data) if args.data else ISBI if (ISBI / "images").is_dir() else ROOT / "data"
        print(f"data: {data}", flush=True)
        paths = make_images(work / "images", args.n, args.size, data)
        pkl = Path(args.model) if args.model else train_model(work, data, args.epochs, args.bs)
        ensure_int8(pkl, args.calib)
        print(f"{args.n} images {args.size}x{args.size}, batch {args.bs}, {torch.get_num_threads()} threads, "
              f"{args.rounds} rounds, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
        cfg = PredictConfig(bs=args.bs)
        predictors, loaded = {}, {}
        for name in backends_to_run():
            t = time.perf_counter()
            predictors[name] = load(pkl, backend=name)
            loaded[name] = time.perf_counter() - t
            predictors[name].predict(paths[: args.bs], bs=args.bs)  # warm-up: allocator, first-call costs
        if "onnx" in predictors:
            predictors["main: onnx"], loaded["main: onnx"] = main_path(predictors["onnx"]), loaded["onnx"]
        ref = predictors["torch"].predict(paths, bs=args.bs)
        agree = {name: float(np.mean([(a == b).mean() for a, b in zip(ref, p.predict(paths, bs=args.bs))]))
                 for name, p in predictors.items()}
        speeds = {name: [] for name in predictors}
        peaks = dict.fromkeys(predictors, 0.0)
        for r in range(args.rounds):
            for name, pred in predictors.items():
                with PeakRSS() as mem:
                    t = time.perf_counter()
                    predict_paths(pred, [str(work / "images")], work / "out" / name, cfg)
                    dt = time.perf_counter() - t
                speeds[name].append(args.n / dt)
                peaks[name] = max(peaks[name], mem.peak)
                print(f"round {r + 1}: {name:<11} {args.n / dt:7.2f} img/s", flush=True)
        report(speeds, agree, loaded, peaks, predictors["auto"].backend_note)


def report(speeds: dict, agree: dict, loaded: dict, peaks: dict, auto_note: str) -> None:
    """The one results table, then auto against ONNX Runtime fp32 through main's path and through today's."""
    base = "onnx" if "onnx" in speeds else "torch"
    per_round = {n: [a / b for a, b in zip(v, speeds[base])] for n, v in speeds.items()}
    print(f"\n| fastseg predict, backend | img/s (median) | x {base} (median of rounds) | pixels as torch fp32 | "
          "load s | peak RSS MiB |\n| --- | --- | --- | --- | --- | --- |")
    for name, v in speeds.items():
        print(f"| {name} | {statistics.median(v):.2f} | {statistics.median(per_round[name]):.2f} | "
              f"{agree[name]:.4%} | {loaded[name]:.1f} | {peaks[name]:.0f} |")
    print(f"\nauto chose: {auto_note}")
    for ref in [n for n in ("main: onnx", base) if n in speeds]:
        per = [a / b for a, b in zip(speeds["auto"], speeds[ref])]
        speed, same = statistics.median(per), agree["auto"]
        verdict = "PASS" if speed >= BAR_SPEED and same >= BAR_AGREEMENT else "FAIL"
        print(f"auto / {ref}: {speed:.2f}x (per round " + ", ".join(f"{x:.2f}" for x in per)
              + f"); {same:.3%} of pixels as fp32 (bar >= {BAR_SPEED}x and >= {BAR_AGREEMENT:.1%}: {verdict})")


if __name__ == "__main__":
    main()
