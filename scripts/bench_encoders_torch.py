#!/usr/bin/env python3
"""PyTorch reference timings for the encoder benchmark (crates/encode/benches/encoders.rs).

Times the same networks as the Rust bench on the same number of threads and prints JSON:
  - EfficientNet-Lite0, built here in plain PyTorch from the architecture facts in
    ../shared/data/README.md and loaded from the shared safetensors (checked against the shared
    reference outputs before timing), batch 1 and 32 at 224 px;
  - torchvision ResNet-50 with random weights, batch 8 at 224 px.
Each is timed in the default NCHW layout and in channels_last; median of N after warm-up.

  /work/venvs/torch/bin/python scripts/bench_encoders_torch.py [--threads 2] [--runs 10]
  /work/venvs/torch/bin/python scripts/bench_encoders_torch.py --export-resnet DIR
      (writes a random-weight torchvision ResNet-50, an input and its outputs, for
       `CAPTIONER_RESNET_FIXTURE=DIR cargo test -p captioner-encode --test fast_resnet50`)
"""
import argparse
import json
import os
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
LITE0_DIR = os.environ.get(
    "CAPTIONER_LITE0_DIR",
    os.path.join(HERE, "..", "..", "shared", "data", "models", "efficientnet-lite0"),
)
STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]


class SameConv(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (asymmetric: the odd pixel goes after)."""

    def forward(self, x):
        ih, iw = x.shape[-2:]
        k, s = self.kernel_size[0], self.stride[0]
        ph = max((-(-ih // s) - 1) * s + k - ih, 0)
        pw = max((-(-iw // s) - 1) * s + k - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return super().forward(x)


def bn(c):
    return nn.BatchNorm2d(c, eps=1e-3)


class MBConv(nn.Module):
    def __init__(self, cin, cout, k, s, ratio):
        super().__init__()
        mid = cin * ratio
        if ratio != 1:
            self._expand_conv = SameConv(cin, mid, 1, bias=False)
            self._bn0 = bn(mid)
        self.ratio = ratio
        self._depthwise_conv = SameConv(mid, mid, k, stride=s, groups=mid, bias=False)
        self._bn1 = bn(mid)
        self._project_conv = SameConv(mid, cout, 1, bias=False)
        self._bn2 = bn(cout)
        self.skip = s == 1 and cin == cout

    def forward(self, x):
        h = x
        if self.ratio != 1:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class Lite0(nn.Module):
    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, stride=2, bias=False)
        self._bn0 = bn(32)
        blocks, cin = [], 32
        for repeats, k, s, ratio, cout in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin, cout, k, s if r == 0 else 1, ratio))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv(cin, 1280, 1, bias=False)
        self._bn1 = bn(1280)
        self._fc = nn.Linear(1280, 1000)

    def forward(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        spatial = F.relu6(self._bn1(self._conv_head(x)))
        pooled = spatial.mean((2, 3))
        return spatial, pooled, self._fc(pooled)


def load_lite0():
    model = Lite0().eval()
    state = load_file(os.path.join(LITE0_DIR, "efficientnet-lite0.safetensors"))
    model.load_state_dict(state, strict=True)
    ref = load_file(os.path.join(LITE0_DIR, "lite0_reference_4imgs.safetensors"))
    with torch.inference_mode():
        _, _, logits = model(ref["input"])
    diff = (logits - ref["logits"]).abs().max().item()
    assert diff < 1e-3, f"plain-PyTorch Lite0 does not reproduce the reference (max diff {diff})"
    return model, diff


def time_model(model, x, warmup, runs):
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), min(times)


def export_resnet(out_dir):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    # Random BN statistics so the folding is exercised (fresh BN layers are the identity).
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.9, 1.1)
                m.bias.uniform_(-0.1, 0.1)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.8, 1.2)
    os.makedirs(out_dir, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if v.dtype == torch.float32}
    save_file(state, os.path.join(out_dir, "resnet50_random.safetensors"))
    x = torch.randn(2, 3, 96, 80)
    with torch.inference_mode():
        f = model.layer4(model.layer3(model.layer2(model.layer1(
            model.maxpool(model.relu(model.bn1(model.conv1(x))))))))
        pooled = f.mean((2, 3))
        logits = model.fc(pooled)
    save_file({"input": x.contiguous(), "features": f.contiguous(), "pooled": pooled,
               "logits": logits}, os.path.join(out_dir, "resnet50_io.safetensors"))
    print(f"wrote {out_dir}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=int(os.environ.get("RAYON_NUM_THREADS", 2)))
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--only", default="", help="comma list: lite0_b1,lite0_b32,resnet50_b8")
    ap.add_argument("--export-resnet", metavar="DIR")
    args = ap.parse_args()
    if args.export_resnet:
        export_resnet(args.export_resnet)
        return
    import torchvision

    torch.set_num_threads(args.threads)
    lite0, ref_diff = load_lite0()
    resnet = torchvision.models.resnet50(weights=None).eval()
    cases = [("lite0_b1", lite0, 1), ("lite0_b32", lite0, 32), ("resnet50_b8", resnet, 8)]
    only = {s for s in args.only.split(",") if s}
    results = []
    for name, model, batch in cases:
        if only and name not in only:
            continue
        x = torch.randn(batch, 3, 224, 224)
        runs = max(3, args.runs // 3) if batch >= 8 else args.runs
        for layout in ("nchw", "channels_last"):
            if layout == "channels_last":
                m = model.to(memory_format=torch.channels_last)
                xi = x.to(memory_format=torch.channels_last)
            else:
                m = model.to(memory_format=torch.contiguous_format)
                xi = x
            med, best = time_model(m, xi, args.warmup, runs)
            results.append({"case": name, "batch": batch, "layout": layout,
                            "median_ms": round(med, 3), "min_ms": round(best, 3), "runs": runs})
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                      "mkldnn": torch.backends.mkldnn.is_available(),
                      "lite0_reference_max_diff": ref_diff, "results": results}, indent=1))


if __name__ == "__main__":
    main()
