"""Builds the tiny random-weight Hugging Face fixtures of crates/vlm and what `transformers` says of them.

Run from the repository root with a Python that has torch and transformers (any 5.x; made with 5.23):

    python scripts/vlm_fixtures.py

It writes, for `blip-tiny` (BlipForConditionalGeneration) and `vit-gpt2-tiny`
(VisionEncoderDecoderModel: ViT encoder + GPT-2 decoder with cross-attention), into
crates/vlm/tests/fixtures/<name>/: the model folder exactly as `save_pretrained` leaves it plus a
tokenizer.json, and `expected.json` with the processor's pixel values of every image, the logits of
a teacher-forced sequence, and the token ids (and beam scores) of `model.generate` under several
settings. The images are synthetic PNGs in crates/vlm/tests/fixtures/images/, already at the models'
32x32 input size so that preprocessing is exact in both implementations.
"""

import json
import os

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "vlm", "tests", "fixtures")
IMG = 32
WORDS = (
    "a picture of dog cat man woman child on the in with sitting running standing grass water street "
    "red blue green white black ball bike car tree beach snow two people playing and is are at near "
    "front holding field road wall small large young"
).split()


def make_images():
    """Four 32x32 RGB PNGs: gradients, stripes and seeded noise."""
    os.makedirs(os.path.join(ROOT, "images"), exist_ok=True)
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:IMG, 0:IMG]
    imgs = [
        np.stack([x * 8, y * 8, (x + y) * 4], -1),
        np.stack([(x // 4 % 2) * 255, (y // 4 % 2) * 200, np.full_like(x, 90)], -1),
        rng.integers(0, 256, (IMG, IMG, 3)),
        np.stack([255 - x * 8, np.full_like(x, 30), y * 8], -1),
    ]
    paths = []
    for i, a in enumerate(imgs):
        p = os.path.join(ROOT, "images", f"img{i}.png")
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB").save(p)
        paths.append(p)
    return paths


def randomize(model, seed, eos_rows=()):
    """Spreads the weights far wider than `initializer_range` so that logits are well separated and
    float rounding can never flip an argmax or a beam ranking between torch and candle."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name.lower() or ".ln_" in name):
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.25 * torch.randn(p.shape, generator=g))


def blip_tokenizer():
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    vocab = {t: i for i, t in enumerate(special + WORDS + ["##s", "##ing"])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens(special)
    return tok, vocab


def gpt2_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = [" ".join(WORDS[i : i + 5]) for i in range(len(WORDS))] * 20
    tok.train_from_iterator(corpus, trainer)
    return tok


def pixel_values(processor, paths):
    imgs = [Image.open(p).convert("RGB") for p in paths]
    return processor(images=imgs, return_tensors="pt")["pixel_values"].float()


def cut(seq, prompt_len, eos):
    """Generated ids after the prompt, through the first `eos`; HF pads what follows."""
    out = []
    for t in seq[prompt_len:]:
        out.append(int(t))
        if t == eos:
            break
    return out


def run_cases(generate, prompt_len, eos, n_images, cases):
    results = []
    for case in cases:
        kw = dict(case["hf"])
        beams = kw.get("num_beams", 1)
        out = generate(
            do_sample=False,
            num_return_sequences=beams,
            return_dict_in_generate=True,
            output_scores=True,
            **kw,
        )
        seqs = out.sequences.tolist()
        per_image = []
        for i in range(n_images):
            hyps = []
            for j in range(beams):
                k = i * beams + j
                h = {"tokens": cut(seqs[k], prompt_len, eos)}
                if beams > 1:
                    h["score"] = float(out.sequences_scores[k])
                hyps.append(h)
            per_image.append(hyps)
        results.append({"name": case["name"], "options": case["options"], "expected": per_image})
    return results


def cases_for(prompt=None):
    base = [
        ("greedy", {}, {}),
        ("greedy-min-ngram", {"min_new_tokens": 7, "no_repeat_ngram_size": 2}, {"min_new_tokens": 7, "no_repeat_ngram": 2}),
        ("beam3", {"num_beams": 3}, {"beams": 3}),
        ("beam3-lp2-ngram2", {"num_beams": 3, "length_penalty": 2.0, "no_repeat_ngram_size": 2},
         {"beams": 3, "length_penalty": 2.0, "no_repeat_ngram": 2}),
        ("beam4-lp2-early", {"num_beams": 4, "length_penalty": 2.0, "early_stopping": True},
         {"beams": 4, "length_penalty": 2.0, "early_stopping": "true"}),
        ("beam3-never-min", {"num_beams": 3, "early_stopping": "never", "min_new_tokens": 3, "length_penalty": 1.5},
         {"beams": 3, "early_stopping": "never", "min_new_tokens": 3, "length_penalty": 1.5}),
    ]
    out = []
    for name, hf, opts in base:
        hf = {"max_new_tokens": 12, "length_penalty": 1.0, "early_stopping": False, **hf}
        opts = {"max_new_tokens": 12, **opts}
        out.append({"name": name, "hf": hf, "options": opts})
    return out


def blip(paths):
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor

    tok, vocab = blip_tokenizer()
    dec = vocab["[DEC]"]
    sep = vocab["[SEP]"]
    cfg = BlipConfig(
        text_config=dict(
            vocab_size=len(vocab), hidden_size=32, encoder_hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64, projection_dim=32,
            bos_token_id=dec, eos_token_id=vocab["[CLS]"], pad_token_id=0, sep_token_id=sep,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            image_size=IMG, patch_size=8, projection_dim=32,
        ),
        projection_dim=32,
        image_text_hidden_size=32,
    )
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(cfg).eval()
    randomize(model, 1)
    with torch.no_grad():
        # Lets [SEP] win now and then, so that beams finish at different lengths.
        model.text_decoder.cls.predictions.bias[sep] += 0.3
    out_dir = os.path.join(ROOT, "blip-tiny")
    model.save_pretrained(out_dir)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    proc = BlipImageProcessor(size={"height": IMG, "width": IMG})
    proc.save_pretrained(out_dir)

    pix = pixel_values(proc, paths)
    with torch.no_grad():
        emb = model.vision_model(pixel_values=pix).last_hidden_state
        forced = [dec] + tok.encode("a dog on the grass with two cats", add_special_tokens=False).ids
        ids = torch.tensor([forced] * len(paths))
        logits = model.text_decoder(input_ids=ids, encoder_hidden_states=emb).logits

        def gen(**kw):
            return model.generate(pixel_values=pix, **kw)

        prompt_ids = tok.encode("a picture of").ids  # [CLS] a picture of [SEP], as BlipProcessor gives

        def gen_prompt(**kw):
            return model.generate(pixel_values=pix, input_ids=torch.tensor([prompt_ids] * len(paths)), **kw)

        cases = run_cases(gen, 1, sep, len(paths), cases_for())
        for c in run_cases(gen_prompt, len(prompt_ids) - 1, sep, len(paths), cases_for()[:4]):
            c["name"] += "-prompt"
            c["options"]["prompt"] = "a picture of"
            cases.append(c)
    return {
        "pixel_values": pix.flatten(1).tolist(),
        "forced_ids": forced,
        "logits": logits.flatten(1).tolist(),
        "cases": cases,
    }


def vit_gpt2(paths):
    from transformers import GPT2Config, ViTConfig, ViTImageProcessor, VisionEncoderDecoderConfig, VisionEncoderDecoderModel

    tok = gpt2_tokenizer()
    eot = tok.token_to_id("<|endoftext|>")
    enc = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=IMG, patch_size=8
    )
    dec = GPT2Config(
        vocab_size=tok.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2, n_head=4,
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, add_cross_attention=True, is_decoder=True,
    )
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    cfg.decoder_start_token_id = eot
    cfg.pad_token_id = eot
    cfg.eos_token_id = eot
    torch.manual_seed(0)
    model = VisionEncoderDecoderModel(config=cfg).eval()
    randomize(model, 2)
    with torch.no_grad():
        model.decoder.transformer.wte.weight[eot] *= 2.0
    model.generation_config.decoder_start_token_id = eot
    model.generation_config.pad_token_id = eot
    model.generation_config.eos_token_id = eot
    out_dir = os.path.join(ROOT, "vit-gpt2-tiny")
    model.save_pretrained(out_dir)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    proc = ViTImageProcessor(size={"height": IMG, "width": IMG})
    proc.save_pretrained(out_dir)

    pix = pixel_values(proc, paths)
    with torch.no_grad():
        forced = [eot] + tok.encode("a dog on the grass with two cats").ids
        ids = torch.tensor([forced] * len(paths))
        logits = model(pixel_values=pix, decoder_input_ids=ids).logits

        def gen(**kw):
            return model.generate(pixel_values=pix, **kw)

        cases = run_cases(gen, 1, eot, len(paths), cases_for())
    return {
        "pixel_values": pix.flatten(1).tolist(),
        "forced_ids": forced,
        "logits": logits.flatten(1).tolist(),
        "cases": cases,
    }


def main():
    torch.set_num_threads(1)
    paths = make_images()
    for name, build in [("blip-tiny", blip), ("vit-gpt2-tiny", vit_gpt2)]:
        expected = build(paths)
        expected["images"] = [os.path.basename(p) for p in paths]
        with open(os.path.join(ROOT, name, "expected.json"), "w") as f:
            json.dump(expected, f)
        for c in expected["cases"]:
            print(name, c["name"], [h[0]["tokens"] for h in c["expected"]])


if __name__ == "__main__":
    main()
