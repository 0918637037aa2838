"""Prediction speed, side by side in one process on the same images: img/s and peak memory.

Rows: raw batched ``model(x)`` in torch eager (the ceiling for the torch path), raw ONNX Runtime
``session.run`` (the ceiling for the ONNX path), ``fastseg`` prediction (decode + model + write
PNGs, as ``fastseg predict`` does) from the ``.pkl`` (torch backend and the default auto backend),
the safe bundle and the ``.onnx`` file, and fastai's one-image ``learn.predict`` loop (the floor).
Model loading is excluded (steady state). The model has random weights (speed does not depend on
them): a 0-epoch learner on the ISBI data (or the demo data) exported in every format.

    python benchmarks/predict_speed.py                 # short: 16 images, ~2-3 min on 2 cores
    python benchmarks/predict_speed.py --n 64          # the issue's run: 64 images of 512x512
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


def make_images(folder: Path, n: int, size: int) -> list[Path]:
    """``n`` RGB images of size x size: ISBI slices (cycled, as RGB) when present, else noise."""
    folder.mkdir(parents=True)
    srcs = sorted((ISBI / "images").glob("*.png")) if (ISBI / "images").is_dir() else []
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


def build_exports(work: Path, bs: int) -> tuple[object, Path]:
    from fastseg.config import FitConfig
    from fastseg.export import export_bundle_beside, export_learner, export_model
    from fastseg.train import build_learner

    data = ISBI if (ISBI / "images").is_dir() else ROOT / "data"
    learn, _, _ = build_learner(FitConfig(data=str(data), weights="none", bs=bs, epochs=1), workdir=work / "learn")
    pkl = export_learner(learn, work / "model.pkl")
    export_bundle_beside(learn, pkl)
    export_model(pkl, "onnx", out=work / "model.onnx")
    return learn, pkl


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="images (the issue's full run: 64)")
    ap.add_argument("--size", type=int, default=512, help="image side in pixels")
    ap.add_argument("--bs", type=int, default=8, help="batch size")
    ap.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads")
    ap.add_argument("--fastai-n", type=int, default=4, help="images for the slow learn.predict loop")
    ap.add_argument("--workers", default="auto", help="fastseg decode worker processes [auto, as fastseg predict]")
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved rounds: every row once per round; medians reported (this machine's "
                         "speed drifts by +-15%% over minutes, which a single pass per row turns into ratio noise)")
    args = ap.parse_args(argv)
    workers = args.workers if args.workers == "auto" else int(args.workers)
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT))
    import warnings

    warnings.filterwarnings("ignore")
    from fastseg.config import PredictConfig
    from fastseg.predict import load, predict_paths

    with tempfile.TemporaryDirectory(prefix="fastseg-bench-") as tmp:
        work = Path(tmp)
        paths = make_images(work / "images", args.n, args.size)
        _, pkl = build_exports(work, args.bs)
        from fastai.learner import load_learner

        learn = load_learner(pkl)  # the deployable learner: its predict sees whole images (padded to /32)
        print(f"{args.n} images {args.size}x{args.size}, batch {args.bs}, {args.threads} threads, {args.rounds} rounds, "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
        ref = load(pkl, backend="torch")
        x = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in paths])
        x = ((x.float() / 255) - ref.mean) / ref.std  # contiguous NCHW, as a user's batch would be
        model = ref.model.eval()

        def raw_torch(batch):
            def run():
                with torch.inference_mode():
                    for k in range(0, len(batch), args.bs):
                        model(batch[k:k + args.bs]).argmax(1)
            return run

        onnx_pred = load(work / "model.onnx")
        sess = onnx_pred.backend.session

        def raw_ort():
            xn = x.numpy()
            for k in range(0, len(xn), args.bs):
                sess.run(None, {"input": xn[k:k + args.bs]})[0].argmax(1)

        def fastseg_with(pred):
            cfg = PredictConfig(bs=args.bs, workers=workers)

            def run():
                predict_paths(pred, [str(work / "images")], work / "out", cfg)
            run.predictor = pred
            return run

        def fastai_loop():
            with learn.no_bar():
                for p in paths[: args.fastai_n]:
                    learn.predict(p)

        learn.model.eval()
        rows = [("raw torch eager model(x) (ceiling)", raw_torch(x), args.n),
                ("raw torch eager, channels_last input", raw_torch(x.contiguous(memory_format=torch.channels_last)),
                 args.n),
                ("raw onnxruntime session.run (ceiling)", raw_ort, args.n)]
        for name, pred in [("fastseg predict .pkl (backend torch)", ref),
                           ("fastseg predict .pkl (default: auto)", load(pkl)),
                           ("fastseg predict bundle (default: auto)", load(pkl.with_suffix(""))),
                           ("fastseg predict .onnx", onnx_pred)]:
            rows.append((f"{name} [{pred.backend_note}]", fastseg_with(pred), args.n))
        rows.append(("fastai learn.predict loop (floor)", fastai_loop, min(args.fastai_n, args.n)))
        for name, fn, _ in rows:  # warm-up: allocator, ORT graph, worker start, first-call costs excluded
            if "learn.predict" in name:
                with learn.no_bar():
                    learn.predict(paths[0])
            elif name.startswith("fastseg"):
                fn.predictor.predict(paths[: args.bs], bs=args.bs)
            else:
                fn()
        speeds: dict[str, list[float]] = {name: [] for name, _, _ in rows}
        peaks: dict[str, float] = {name: 0.0 for name, _, _ in rows}
        for r in range(args.rounds):
            for name, fn, n in rows:
                with PeakRSS() as mem:
                    t = time.perf_counter()
                    fn()
                    dt = time.perf_counter() - t
                speeds[name].append(n / dt)
                peaks[name] = max(peaks[name], mem.peak)
                print(f"round {r + 1}: {name:<62} {n / dt:7.2f} img/s", flush=True)
        med = {name.split(" [")[0]: statistics.median(v) for name, v in speeds.items()}
        print("\n| path | img/s (median) | per round | peak RSS MiB |\n| --- | --- | --- | --- |")
        for name, v in speeds.items():
            print(f"| {name} | {statistics.median(v):.2f} | {', '.join(f'{a:.2f}' for a in v)} | {peaks[name]:.0f} |")
        t, o = med["raw torch eager model(x) (ceiling)"], med["raw onnxruntime session.run (ceiling)"]
        tcl = med["raw torch eager, channels_last input"]
        ratio = [b / a for a, b in zip(speeds["raw torch eager model(x) (ceiling)"],
                                       speeds["raw onnxruntime session.run (ceiling)"])]
        print(f"\nfastseg .pkl torch / raw torch:        {med['fastseg predict .pkl (backend torch)'] / t:.2f}x (goal >= 0.9)")
        print(f"fastseg .pkl auto / raw torch:         {med['fastseg predict .pkl (default: auto)'] / t:.2f}x")
        print(f"fastseg .onnx / raw onnxruntime:       {med['fastseg predict .onnx'] / o:.2f}x")
        print(f"raw onnxruntime / raw torch:           {o / t:.2f}x (goal >= 2); per round "
              f"{', '.join(f'{a:.2f}' for a in ratio)}")
        print(f"raw onnxruntime / torch channels_last: {o / tcl:.2f}x (torch's best eager layout, for reference)")


if __name__ == "__main__":
    main()
