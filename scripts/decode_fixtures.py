"""Writes crates/decode/tests/fixtures/torch_rnn.json: small torch.nn.LSTM / GRU layers and a
fused-loss case with their outputs and gradients, so the Rust kernels are checked against PyTorch
itself (weights map 1:1, no renaming). Run from the repo root with a torch venv:

    /work/venvs/torch/bin/python scripts/decode_fixtures.py
"""
import json
import pathlib

import torch
import torch.nn.functional as F

T, B, I, H, V = 4, 3, 5, 6, 9
OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/decode/tests/fixtures/torch_rnn.json"


def flat(t):
    return [round(float(v), 8) for v in t.detach().reshape(-1)]


def rnn_case(kind):
    torch.manual_seed(0 if kind == "lstm" else 1)
    layer = torch.nn.LSTM(I, H) if kind == "lstm" else torch.nn.GRU(I, H)  # time-major like ours
    x = torch.randn(T, B, I, requires_grad=True)
    h0 = torch.randn(1, B, H, requires_grad=True)
    w_out = torch.randn(T, B, H)
    if kind == "lstm":
        c0 = torch.randn(1, B, H, requires_grad=True)
        out, _ = layer(x, (h0, c0))
    else:
        out, _ = layer(x, h0)
    (out * w_out).sum().backward()
    case = {"x": flat(x), "h0": flat(h0), "w_out": flat(w_out), "out": flat(out),
            "dx": flat(x.grad), "dh0": flat(h0.grad)}
    if kind == "lstm":
        case.update(c0=flat(c0), dc0=flat(c0.grad))
    for name, p in layer.named_parameters():
        case[name] = flat(p)
        case["d_" + name] = flat(p.grad)
    return case


def xent_case():
    torch.manual_seed(2)
    n = 8
    x = torch.randn(n, H, requires_grad=True)
    lin = torch.nn.Linear(H, V)
    targets = torch.randint(1, V, (n,))
    targets[3] = 0
    loss = F.cross_entropy(lin(x), targets, ignore_index=0, label_smoothing=0.1)
    loss.backward()
    return {"x": flat(x), "weight": flat(lin.weight), "bias": flat(lin.bias),
            "targets": [int(t) for t in targets], "loss": float(loss.detach()), "dx": flat(x.grad),
            "d_weight": flat(lin.weight.grad), "d_bias": flat(lin.bias.grad)}


def main():
    fixture = {"dims": {"seq_len": T, "batch": B, "input": I, "hidden": H, "vocab": V},
               "torch": torch.__version__, "lstm": rnn_case("lstm"), "gru": rnn_case("gru"),
               "xent": xent_case()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(fixture))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
