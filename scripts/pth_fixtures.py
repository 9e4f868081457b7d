"""Writes the PyTorch `.pth` fixtures that `cargo test -p captioner-encode --test pth_weights`
reads (crates/encode/tests/fixtures/). Run with the torch venv (no internet needed):

    /work/venvs/torch/bin/python scripts/pth_fixtures.py

- tiny_densenet_checkpoint.pth: the tiny DenseNet of scripts/encoder_fixtures.py
  (tiny_densenet.safetensors, so tiny_densenet_expected.safetensors stays the reference) saved
  the way real checkpoints are: a training checkpoint `{"state_dict": ..., "epoch": 3}` whose
  names carry `nn.DataParallel`'s `module.` prefix and the legacy DenseNet spelling of
  torchvision's own densenet*.pth files (`denselayer1.norm.1.weight` for `norm1.weight`);
- legacy_format.pth: one tensor in the pre-1.6 (non-zip) format, which the Rust loader refuses
  with a message saying how to convert.
"""
import pathlib
import re

import torch
from safetensors.torch import load_file

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/encode/tests/fixtures"
# The inverse of torchvision.models.densenet._load_state_dict's rename.
NEW_NAME = re.compile(r"^(.*denselayer\d+\.)(norm|relu|conv)([12])\.(weight|bias|running_mean|running_var)$")


def main():
    state = load_file(str(OUT / "tiny_densenet.safetensors"))
    legacy = {}
    for name, tensor in state.items():
        m = NEW_NAME.match(name)
        if m:
            name = f"{m[1]}{m[2]}.{m[3]}.{m[4]}"
        legacy["module." + name] = tensor
    assert any(".norm.1." in k for k in legacy), "no legacy names produced"
    path = OUT / "tiny_densenet_checkpoint.pth"
    torch.save({"state_dict": legacy, "epoch": 3}, path)
    print(f"wrote {path} ({path.stat().st_size} bytes)")

    path = OUT / "legacy_format.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path, _use_new_zipfile_serialization=False)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
