"""Writes the torchvision reference outputs for the candle VGG16, DenseNet201 and InceptionV3
(crates/encode/src/models/) to crates/encode/tests/fixtures/. Run from anywhere with the torch venv
(torch, torchvision, safetensors; no internet, no pretrained weights):

    /work/venvs/torch/bin/python scripts/encoder_fixtures.py

then `cargo test -p captioner-encode --test vgg16 --test densenet201 --test inception_v3`.

The full-size models get "synthetic" weights that the Rust tests rebuild bit for bit from each
tensor's name and shape (crates/encode/tests/fixtures/synthetic_weights.rs states the rule;
`synthetic_tensor` below is the same), so no weights file is committed. Only the inputs and the
expected outputs are written:

- vgg16_expected.safetensors: input [2,3,32,32], spatial (features), fc2 (classifier[3] after ReLU),
  logits of torchvision.models.vgg16;
- densenet201_expected.safetensors: input [2,3,64,56], spatial (relu(norm5)), pooled, logits of
  torchvision.models.densenet201;
- inception_v3_expected.safetensors: input [2,3,107,99], spatial (Mixed_7c), pooled, logits of
  torchvision.models.inception_v3(aux_logits=False, transform_input=False), and the logits with
  transform_input=True (logits_transform_input).

The tiny DenseNet (growth 8, blocks (1,1,1,1), 16 initial features, 10 classes) instead gets torch
random weights saved as a real torchvision state_dict, proving the conversion path
(`safetensors.torch.save_file(model.state_dict(), ...)`): tiny_densenet.safetensors and
tiny_densenet_expected.safetensors (input [2,3,75,45]).
"""
import pathlib

import numpy as np
import torch
import torchvision
from safetensors.torch import save_file

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/encode/tests/fixtures"
CHUNK = 1 << 22
M64 = np.uint64


def fnv1a32(name):
    h = 0x811C9DC5
    for b in name.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def synthetic_tensor(name, shape):
    """Same rule as tests/fixtures/synthetic_weights.rs (computed in f64, rounded once to f32)."""
    numel = int(np.prod(shape, dtype=np.int64))
    fan_in = int(np.prod(shape[1:], dtype=np.int64))
    if name.endswith("running_var"):
        scale, offset = 0.5, 1.0
    elif name.endswith("running_mean") or name.endswith("bias"):
        scale, offset = 0.1, 0.0
    elif len(shape) >= 2:
        scale, offset = float(np.sqrt(6.0 / fan_in)), 0.0
    else:
        scale, offset = 0.25, 1.0
    seed = M64(fnv1a32(name)) << M64(32)
    out = np.empty(numel, dtype=np.float32)
    for start in range(0, numel, CHUNK):
        z = np.arange(start, min(start + CHUNK, numel), dtype=np.uint64) | seed
        z = z * M64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> M64(30))) * M64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> M64(27))) * M64(0x94D049BB133111EB)
        z ^= z >> M64(31)
        x = (z >> M64(40)).astype(np.float64) / 8388608.0 - 1.0
        out[start:start + len(x)] = (x * scale + offset).astype(np.float32)
    return torch.from_numpy(out.reshape(shape))


def fill_synthetic(model):
    sd = model.state_dict()
    for name, t in sd.items():
        if t.is_floating_point():
            t.copy_(synthetic_tensor(name, tuple(t.shape)))
    return model.eval()


def save(name, tensors):
    path = OUT / name
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(path))
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def vgg16():
    model = fill_synthetic(torchvision.models.vgg16())
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    spatial = model.features(x)
    fc2 = model.classifier[:5](torch.flatten(model.avgpool(spatial), 1))
    logits = model.classifier[5:](fc2)
    assert torch.allclose(logits, model(x), atol=1e-5)
    save("vgg16_expected.safetensors", {"input": x, "spatial": spatial, "fc2": fc2, "logits": logits})


def densenet_outputs(model, x):
    spatial = torch.relu(model.features(x))
    pooled = spatial.mean((2, 3))
    logits = model.classifier(pooled)
    assert torch.allclose(logits, model(x), atol=1e-5)
    return {"input": x, "spatial": spatial, "pooled": pooled, "logits": logits}


def densenet201():
    model = fill_synthetic(torchvision.models.densenet201())
    torch.manual_seed(1)
    save("densenet201_expected.safetensors", densenet_outputs(model, torch.randn(2, 3, 64, 56)))


def tiny_densenet():
    torch.manual_seed(2)
    model = torchvision.models.DenseNet(growth_rate=8, block_config=(1, 1, 1, 1),
                                        num_init_features=16, bn_size=4, num_classes=10)
    with torch.no_grad():  # default init leaves BatchNorm the identity: make it do something
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
            elif isinstance(m, torch.nn.Linear):
                m.bias.normal_(0, 0.1)
    model.eval()
    save("tiny_densenet.safetensors", model.state_dict())
    save("tiny_densenet_expected.safetensors", densenet_outputs(model, torch.randn(2, 3, 75, 45)))


def inception_v3():
    model = torchvision.models.inception_v3(weights=None, aux_logits=False, transform_input=False,
                                            init_weights=False)
    model = fill_synthetic(model)
    torch.manual_seed(3)
    x = torch.randn(2, 3, 107, 99)
    m = model
    h = m.maxpool1(m.Conv2d_2b_3x3(m.Conv2d_2a_3x3(m.Conv2d_1a_3x3(x))))
    h = m.maxpool2(m.Conv2d_4a_3x3(m.Conv2d_3b_1x1(h)))
    for block in [m.Mixed_5b, m.Mixed_5c, m.Mixed_5d, m.Mixed_6a, m.Mixed_6b, m.Mixed_6c,
                  m.Mixed_6d, m.Mixed_6e, m.Mixed_7a, m.Mixed_7b, m.Mixed_7c]:
        h = block(h)
    spatial = h
    pooled = spatial.mean((2, 3))
    logits = m.fc(pooled)
    assert torch.allclose(logits, model(x), atol=1e-5)
    model.transform_input = True  # as torchvision builds it for the pretrained weights
    logits_transformed = model(x)
    save("inception_v3_expected.safetensors",
         {"input": x, "spatial": spatial, "pooled": pooled, "logits": logits,
          "logits_transform_input": logits_transformed})


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    with torch.no_grad():
        vgg16()
        densenet201()
        tiny_densenet()
        inception_v3()


if __name__ == "__main__":
    main()
