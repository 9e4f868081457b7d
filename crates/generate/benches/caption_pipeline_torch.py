"""PyTorch reference for benches/caption_pipeline.rs: the same captioning pipeline, same weights.

JPEG file -> PIL decode (EXIF orientation applied), RGB, squash-resize to 224x224 with PIL's
bilinear filter (antialiased when downscaling, like the Rust loader), the bundle's normalisation
((x / 255 - mean) / std, `encoder.normalization` in its config.json) -> EfficientNet-Lite0 in plain PyTorch (built by
scripts/bench_encoders_torch.py from the shared safetensors and checked against the shared
reference outputs) -> spatial features [n, 49, 1280] -> sgrvinod's DecoderWithAttention ("Show,
Attend and Tell", same parameter names) loaded from the bundle's model.safetensors -> beam search
of width 3 batched over the images, 1 to 20 words.

The beam search follows the Rust `beam_search` (crates/generate/src/beam.rs) so that captions can
be compared: every step takes the 2k best (row, word) candidates of each image over its k beams
(as sgrvinod's caption.py takes the k best), an `<end>` among the first k finishes a hypothesis,
the first k other candidates stay alive (the beam keeps width k instead of shrinking), and an image
stops once it has k finished hypotheses and its best live beam cannot beat the worst of them.
Hypotheses are ranked by their summed log-probability after the bundle's length penalty
(`length_penalty` in its config.json: none, average or {"gnmt": alpha}, as the Rust `LengthPenalty`;
the length counts `<end>` for a finished caption). `<pad>` and `<start>` are never generated and `<end>`
not as the first word. Beams still alive after 20 words are returned cut.

Measurements (2 threads, torch.inference_mode), printed like the Rust bench:
  single ms/image: median over --runs of read + decode + preprocess + encoder + beam for one
                   image (the first Flickr8k test image, a 224x224 JPEG like all of the shared
                   copy, so resizing is a no-op on both sides);
  folder images/s: the 1,000 Flickr8k test images through a DataLoader (batch 32, --workers
                   processes decoding ahead while the main process encodes and decodes captions).
The folder's captions go to --captions-out; with --compare FILE (the Rust bench's
captions_rust.tsv) it prints the agreement rate over the first 20 images and over all of them.
--folder DIR captions every file of DIR instead of the test split (scripts/bench_caption.sh uses
it on PNG copies of test images: identical pixels on both sides, so only the models' arithmetic
can differ; PIL's libjpeg-turbo and the Rust `image` crate's JPEG decoder differ by a level here
and there, which flips a few captions on their own).

  /work/venvs/torch/bin/python crates/generate/benches/caption_pipeline_torch.py \
      [--runs 20] [--batch-size 32] [--images 1000] [--workers 2] [--threads 2]
      [--only single,folder] [--image FILE] [--folder DIR] [--compare FILE] [--channels-last]

Model bundle: $CAPTIONER_BENCH_MODEL, else models/default, else runs/default/best (paths relative
to the repository root); data from $CAPTIONER_SHARED_DATA (default ../shared/data).
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageOps
from safetensors.torch import load_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from bench_encoders_torch import load_lite0  # noqa: E402

PAD, START, END = 0, 1, 2
SIZE = 224
# By the name a bundle records (crates/encode/src/image.rs, `NormalizationKind`); bundles
# without one used "imagenet".
NORMALIZATIONS = {
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    "inception": ([127 / 255] * 3, [128 / 255] * 3),
}


def normalization(name):
    """(mean, std) as [3, 1, 1] tensors for a recorded normalization name."""
    mean, std = NORMALIZATIONS[name]
    return torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)


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


class DeepOutput(nn.Module):
    """Xu et al.'s deep output layer (eq. 7): tanh(lstm(h) + ctx(awe) + embedding)."""

    def __init__(self, embed, hidden, feat):
        super().__init__()
        self.lstm = nn.Linear(hidden, embed)
        self.ctx = nn.Linear(feat, embed, bias=False)


class SatDecoder(nn.Module):
    """sgrvinod's DecoderWithAttention (same parameter names), inference only; with
    `deep_output`, the deep output layer of crates/decode/src/models/sat.rs."""

    def __init__(self, vocab, embed, hidden, attention, feat, deep_output=False):
        super().__init__()
        self.vocab = vocab
        self.attention = Attention(feat, hidden, attention)
        self.embedding = nn.Embedding(vocab, embed)
        self.decode_step = nn.LSTMCell(embed + feat, hidden)
        self.init_h = nn.Linear(feat, hidden)
        self.init_c = nn.Linear(feat, hidden)
        self.f_beta = nn.Linear(hidden, feat)
        self.deep_output = DeepOutput(embed, hidden, feat) if deep_output else None
        self.fc = nn.Linear(embed if deep_output else hidden, vocab)

    def start(self, encoder_out):
        """(h0, c0) and encoder_att(S), once per image."""
        mean = encoder_out.mean(dim=1)
        return self.init_h(mean), self.init_c(mean), self.attention.encoder_att(encoder_out)

    def step(self, tokens, h, c, encoder_out, att1):
        """One word for every row: log-probabilities [rows, V] and the new state."""
        awe, _ = self.attention(encoder_out, att1, h)
        awe = torch.sigmoid(self.f_beta(h)) * awe
        emb = self.embedding(tokens)
        h, c = self.decode_step(torch.cat([emb, awe], dim=1), (h, c))
        out = h
        if self.deep_output is not None:
            out = torch.tanh(self.deep_output.lstm(h) + self.deep_output.ctx(awe) + emb)
        return F.log_softmax(self.fc(out), dim=1), h, c


def pool_insert(pool, cap, score, tokens):
    """Keeps the `cap` best (score, tokens), best first; ties go after those already in."""
    if len(pool) >= cap and score <= pool[-1][0]:
        return
    at = 0
    while at < len(pool) and pool[at][0] >= score:
        at += 1
    pool.insert(at, (score, tokens))
    del pool[cap:]


def length_penalty(spec):
    """The bundle's `length_penalty` as score(log_prob, length), like the Rust `LengthPenalty`."""
    if spec in (None, "none"):
        return lambda s, n: s
    if spec == "average":
        return lambda s, n: s / max(n, 1)
    alpha = float(spec["gnmt"])
    return lambda s, n: s / ((5.0 + max(n, 1)) / 6.0) ** alpha


def beam_search(dec, spatial, k=3, max_words=20, min_words=1, penalty=length_penalty(None)):
    """Word ids of the best caption of every image of `spatial` [n, P, F]."""
    n, v = spatial.size(0), dec.vocab
    h, c, att1 = dec.start(spatial)
    active = list(range(n))  # images still searching; their beams are `width` rows each
    width = 1
    enc_rows, att1_rows = spatial, att1
    tokens = torch.full((n,), START, dtype=torch.long)
    scores = torch.zeros(n)
    hist = torch.zeros((n, 0), dtype=torch.long)
    pools = [[] for _ in range(n)]
    for t in range(max_words):
        logp, h, c = dec.step(tokens, h, c, enc_rows, att1_rows)
        logp[:, PAD] = float("-inf")
        logp[:, START] = float("-inf")
        if t < min_words:
            logp[:, END] = float("-inf")
        cand = (scores.unsqueeze(1) + logp).view(len(active), width * v)
        top_s, top_i = cand.topk(2 * k, dim=1)
        top_s, top_i = top_s.tolist(), top_i.tolist()
        last = t + 1 == max_words
        parents, next_tok, next_sc, alive = [], [], [], []
        for j, img in enumerate(active):
            pool, first, live = pools[img], len(parents), 0
            for rank, (s, idx) in enumerate(zip(top_s[j], top_i[j])):
                if s == float("-inf"):
                    break
                r, tok = j * width + idx // v, idx % v
                if tok == END:
                    if rank < k:
                        pool_insert(pool, k, penalty(s, t + 1), hist[r].tolist())
                else:
                    if last:
                        pool_insert(pool, k, penalty(s, t + 1), hist[r].tolist() + [tok])
                    else:
                        parents.append(r)
                        next_tok.append(tok)
                        next_sc.append(s)
                    live += 1
                if live == k:
                    break
            survivors = len(parents) - first
            # The best score any continuation of the best live beam could still reach.
            hopeless = len(pool) >= k and survivors and max(
                penalty(next_sc[first], t + 2), penalty(next_sc[first], max(max_words, t + 2))
            ) <= pool[-1][0]
            if survivors == 0 or hopeless:
                del parents[first:], next_tok[first:], next_sc[first:]
            else:
                assert survivors == k, "fewer live beams than the beam width"
                alive.append(img)
        if not parents:
            break
        idx = torch.tensor(parents)
        h, c = h[idx], c[idx]
        tokens = torch.tensor(next_tok)
        scores = torch.tensor(next_sc)
        hist = torch.cat([hist[idx], tokens.unsqueeze(1)], dim=1)
        if alive != active or width != k:
            rows = torch.tensor(alive).repeat_interleave(k)
            enc_rows, att1_rows = spatial[rows], att1[rows]
        active, width = alive, k
    return [pool[0][1] if pool else [] for pool in pools]


def load_image(path, norm):
    """Decode, orient, RGB, squash to 224x224 (bilinear, antialiased), normalise with
    `norm` = (mean, std): [3, 224, 224]."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        if im.size != (SIZE, SIZE):
            im = im.resize((SIZE, SIZE), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float().div_(255.0)
    mean, std = norm
    return (x - mean) / std


class Files(torch.utils.data.Dataset):
    def __init__(self, paths, norm):
        self.paths = paths
        self.norm = norm

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return load_image(self.paths[i], self.norm)


class Pipeline:
    def __init__(self, model_dir, channels_last):
        cfg = json.load(open(os.path.join(model_dir, "config.json")))
        d, dims = cfg["decoder"], cfg["dims"]
        assert d["kind"] == "sat", f"only the sat decoder is written here, not {d['kind']}"
        self.max_words = cfg.get("max_words", 20)
        self.penalty = length_penalty(cfg.get("length_penalty"))
        self.norm = normalization(cfg["encoder"].get("normalization", "imagenet"))
        self.dec = SatDecoder(dims["vocab"], d["embed"], d["hidden"], d["attention"],
                              dims["feature_dim"], d.get("deep_output", False)).eval()
        state = load_file(os.path.join(model_dir, "model.safetensors"))
        self.dec.load_state_dict({k: t.float() for k, t in state.items()}, strict=True)
        tok = json.load(open(os.path.join(model_dir, "tokenizer.json")))
        vocab = tok["model"]["vocab"]
        self.words = [None] * len(vocab)
        for w, i in vocab.items():
            self.words[i] = w
        self.lite0, self.ref_diff = load_lite0()
        self.channels_last = channels_last
        if channels_last:
            self.lite0 = self.lite0.to(memory_format=torch.channels_last)

    def caption_batch(self, x):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        spatial, _, _ = self.lite0(x)
        spatial = spatial.flatten(2).transpose(1, 2).contiguous()  # [n, 49, 1280], raster order
        ids = beam_search(self.dec, spatial, k=3, max_words=self.max_words, penalty=self.penalty)
        return [" ".join(self.words[i] for i in seq) for seq in ids]


def model_dir():
    if os.environ.get("CAPTIONER_BENCH_MODEL"):
        return os.environ["CAPTIONER_BENCH_MODEL"]
    if os.path.isfile(os.path.join("models", "default", "model.safetensors")):
        return os.path.join("models", "default")
    return os.path.join("runs", "default", "best")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=int(os.environ.get("RAYON_NUM_THREADS", 2)))
    ap.add_argument("--threads", type=int, default=int(os.environ.get("RAYON_NUM_THREADS", 2)))
    ap.add_argument("--only", default="single,folder")
    ap.add_argument("--image")
    ap.add_argument("--folder", help="caption every file of this folder instead of the test split")
    ap.add_argument("--captions-out", default="target/bench-caption/captions_torch.tsv")
    ap.add_argument("--compare", help="captions TSV of the Rust bench")
    ap.add_argument("--channels-last", action="store_true")
    args = ap.parse_args()
    os.chdir(ROOT)
    torch.set_num_threads(args.threads)
    only = set(args.only.split(","))
    shared = os.environ.get("CAPTIONER_SHARED_DATA", os.path.join("..", "shared", "data"))
    flickr = os.path.join(shared, "flickr8k")
    names = [l.strip() for l in open(os.path.join(flickr, "Flickr_8k.testImages.txt")) if l.strip()]
    paths = [os.path.join(flickr, "images", n) for n in names[:args.images]]
    if args.folder:
        names = sorted(n for n in os.listdir(args.folder)
                       if os.path.isfile(os.path.join(args.folder, n)))
        paths = [os.path.join(args.folder, n) for n in names]
    os.makedirs(os.path.dirname(args.captions_out) or ".", exist_ok=True)

    mdir = model_dir()
    t0 = time.perf_counter()
    pipe = Pipeline(mdir, args.channels_last)
    load_ms = (time.perf_counter() - t0) * 1e3
    print(f"threads: {torch.get_num_threads()}  torch {torch.__version__}  model: {mdir} "
          f"(sat, vocabulary {len(pipe.words)})  load ms: {load_ms:.0f}  "
          f"lite0 reference max diff: {pipe.ref_diff:.1e}"
          f"{'  channels_last' if args.channels_last else ''}")

    with torch.inference_mode():
        if "single" in only:
            path = args.image or paths[0]
            times = []
            for i in range(args.runs + 3):
                t = time.perf_counter()
                caption = pipe.caption_batch(load_image(path, pipe.norm).unsqueeze(0))[0]
                if i >= 3:
                    times.append((time.perf_counter() - t) * 1e3)
            with Image.open(path) as im:
                w, h = im.size
            print(f"single ms/image: {statistics.median(times):.2f}  (min {min(times):.2f}, "
                  f"median of {args.runs} runs, {w}x{h} {path}: \"{caption}\")")

        if "folder" in only:
            t = time.perf_counter()
            loader = torch.utils.data.DataLoader(
                Files(paths, pipe.norm), batch_size=args.batch_size, shuffle=False,
                num_workers=args.workers, prefetch_factor=2 if args.workers else None)
            captions = []
            for x in loader:
                captions.extend(pipe.caption_batch(x))
            secs = time.perf_counter() - t
            print(f"folder images/s: {len(paths) / secs:.2f}  ({len(paths)} images, batch "
                  f"{args.batch_size}, loader workers {args.workers}, {secs:.2f} s)")
            with open(args.captions_out, "w") as f:
                for n, c in zip(names, captions):
                    f.write(f"{n}\t{c}\n")
            if args.compare:
                rust = dict(l.rstrip("\n").split("\t", 1) for l in open(args.compare) if "\t" in l)
                pairs = [(n, c, rust[n]) for n, c in zip(names, captions) if n in rust]
                for label, sub in (("first 20", pairs[:20]), ("all", pairs)):
                    same = sum(c == r for _, c, r in sub)
                    print(f"agreement with Rust ({label}): {same}/{len(sub)} = "
                          f"{100.0 * same / max(len(sub), 1):.1f}%")
                for n, c, r in [p for p in pairs if p[1] != p[2]][:5]:
                    print(f"  differs {n}: torch \"{c}\" / rust \"{r}\"")


if __name__ == "__main__":
    main()
