"""PyTorch reference for benches/train_step.rs: the same decoders, shapes and optimiser.

Run in a venv outside the repo (`/work/venvs/torch/bin/python crates/decode/benches/train_step_torch.py`);
prints `<model> ms/step: <median>` like the Rust bench. Shapes: batch 64, 20 steps, vocabulary
8,000, embedding 256, hidden 512, image feature 2048, Adam(lr=1e-3), 2 threads.
- lstm: h0 = Linear(2048,512)(f), c0 = Linear(2048,512)(f), LSTM(256,512), Linear(512,8000), CE
- gru:  h0 = tanh(Linear(2048,512)(f)), GRU(256,512), Linear(512,8000), CE
"""
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

B, T, V, E, H, FEAT = 64, 20, 8000, 256, 512, 2048


class Decoder(nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.cell = cell
        self.embedding = nn.Embedding(V, E)
        self.init_h = nn.Linear(FEAT, H)
        if cell == "lstm":
            self.init_c = nn.Linear(FEAT, H)
            self.rnn = nn.LSTM(E, H, batch_first=True)
        else:
            self.rnn = nn.GRU(E, H, batch_first=True)
        self.fc = nn.Linear(H, V)

    def forward(self, feats, tokens):
        x = self.embedding(tokens)
        h0 = self.init_h(feats).unsqueeze(0)
        if self.cell == "lstm":
            c0 = self.init_c(feats).unsqueeze(0)
            out, _ = self.rnn(x, (h0, c0))
        else:
            out, _ = self.rnn(x, torch.tanh(h0))
        return self.fc(out)


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    args = sys.argv[1:]
    iters = next((int(a) for a in args if a.isdigit()), 10)
    which = [a for a in args if a in ("lstm", "gru")] or ["lstm", "gru"]
    feats = torch.rand(B, FEAT)
    tokens = torch.randint(1, V, (B, T))
    targets = torch.randint(1, V, (B, T))
    print(f"threads: {torch.get_num_threads()} torch {torch.__version__}")
    for cell in which:
        model = Decoder(cell)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step():
            opt.zero_grad(set_to_none=True)
            logits = model(feats, tokens)
            loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=0)
            loss.backward()
            opt.step()
            return loss

        for _ in range(3):
            step()
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
        n = sum(p.numel() for p in model.parameters())
        print(f"{cell} ms/step: {statistics.median(times):.1f}  ({n} params, {iters} iters)")


if __name__ == "__main__":
    main()
