"""PyTorch reference for benches/train_step.rs: the same decoders, shapes and optimiser.

Run in a venv outside the repo (`/work/venvs/torch/bin/python crates/decode/benches/train_step_torch.py`);
prints `<model> ms/step: <median>` like the Rust bench. Shapes: batch 64, 20 steps, vocabulary
8,000, embedding 256, hidden 512, image feature 2048, Adam(lr=1e-3), 2 threads.
- lstm: h0 = Linear(2048,512)(f), c0 = Linear(2048,512)(f), LSTM(256,512), Linear(512,8000), CE
- gru:  h0 = tanh(Linear(2048,512)(f)), GRU(256,512), Linear(512,8000), CE
- sat (only when named): sgrvinod's DecoderWithAttention ("Show, Attend and Tell") over features
  [64, 49, 1280] (7x7 grid), embedding/hidden/attention 512, dropout 0.5, CE + alpha_c (1.0) *
  mean_b sum_p (1 - sum_t alpha)^2, masked by target != 0 instead of sorting by length, and the
  vocabulary projection done once for all steps after the loop, as in the Rust `sat` mode.
Usage: train_step_torch.py [iters] [lstm] [gru] [sat]   (no model named: lstm and gru)
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


P, SAT_FEAT, SAT_E, SAT_H, SAT_A, ALPHA_C = 49, 1280, 512, 512, 512, 1.0


class Attention(nn.Module):
    def __init__(self, encoder_dim, decoder_dim, attention_dim):
        super().__init__()
        self.encoder_att = nn.Linear(encoder_dim, attention_dim)
        self.decoder_att = nn.Linear(decoder_dim, attention_dim)
        self.full_att = nn.Linear(attention_dim, 1)

    def forward(self, encoder_out, att1, decoder_hidden):
        att2 = self.decoder_att(decoder_hidden)
        att = self.full_att(F.relu(att1 + att2.unsqueeze(1))).squeeze(2)
        alpha = F.softmax(att, dim=1)
        awe = torch.bmm(alpha.unsqueeze(1), encoder_out).squeeze(1)
        return awe, alpha


class SatDecoder(nn.Module):
    """sgrvinod's DecoderWithAttention (same parameter names), without the length sort."""

    def __init__(self):
        super().__init__()
        self.attention = Attention(SAT_FEAT, SAT_H, SAT_A)
        self.embedding = nn.Embedding(V, SAT_E)
        self.dropout = nn.Dropout(p=0.5)
        self.decode_step = nn.LSTMCell(SAT_E + SAT_FEAT, SAT_H)
        self.init_h = nn.Linear(SAT_FEAT, SAT_H)
        self.init_c = nn.Linear(SAT_FEAT, SAT_H)
        self.f_beta = nn.Linear(SAT_H, SAT_FEAT)
        self.fc = nn.Linear(SAT_H, V)
        self.embedding.weight.data.uniform_(-0.1, 0.1)
        self.fc.bias.data.fill_(0)
        self.fc.weight.data.uniform_(-0.1, 0.1)

    def forward(self, encoder_out, tokens):
        emb = self.embedding(tokens)
        mean = encoder_out.mean(dim=1)
        h, c = self.init_h(mean), self.init_c(mean)
        att1 = self.attention.encoder_att(encoder_out)  # once for all steps
        hs, alphas = [], []
        for t in range(tokens.size(1)):
            awe, alpha = self.attention(encoder_out, att1, h)
            awe = torch.sigmoid(self.f_beta(h)) * awe
            h, c = self.decode_step(torch.cat([emb[:, t], awe], dim=1), (h, c))
            hs.append(h)
            alphas.append(alpha)
        logits = self.fc(self.dropout(torch.stack(hs, dim=1)))
        return logits, torch.stack(alphas, dim=1)


def sat_loss(model, spatial, tokens, targets):
    logits, alphas = model(spatial, tokens)
    ce = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=0)
    valid = (targets != 0).unsqueeze(2).to(alphas.dtype)
    cover = (alphas * valid).sum(dim=1)
    return ce + ALPHA_C * ((1.0 - cover) ** 2).sum(dim=1).mean()


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    args = sys.argv[1:]
    iters = next((int(a) for a in args if a.isdigit()), 10)
    which = [a for a in args if a in ("lstm", "gru", "sat")] or ["lstm", "gru"]
    feats = torch.rand(B, FEAT)
    tokens = torch.randint(1, V, (B, T))
    targets = torch.randint(1, V, (B, T))
    print(f"threads: {torch.get_num_threads()} torch {torch.__version__}")
    spatial = torch.rand(B, P, SAT_FEAT) if "sat" in which else None
    for cell in which:
        model = SatDecoder() if cell == "sat" else Decoder(cell)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step():
            opt.zero_grad(set_to_none=True)
            if cell == "sat":
                loss = sat_loss(model, spatial, tokens, targets)
            else:
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
