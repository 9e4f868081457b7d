"""Regenerates tiny_lite.pth and tiny_lite_expected.safetensors (needs torch and safetensors).

A two-block EfficientNet-Lite with random weights under the original key names, saved as a PyTorch
state dict, and the outputs of an independent PyTorch forward pass (TF SAME padding, BN eps 1e-3,
ReLU6) on an odd-sized input. tests/tiny_lite.rs checks the candle model and the .pth loader on it.
"""
import collections

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(0)
sd = collections.OrderedDict()


def conv(name, o, i, k):
    sd[name + ".weight"] = torch.randn(o, i, k, k) * 0.3


def bn(name, c):
    sd[name + ".weight"] = torch.rand(c) + 0.5
    sd[name + ".bias"] = torch.randn(c) * 0.1
    sd[name + ".running_mean"] = torch.randn(c) * 0.1
    sd[name + ".running_var"] = torch.rand(c) + 0.5
    sd[name + ".num_batches_tracked"] = torch.tensor(7, dtype=torch.int64)


# stem 4; stages (repeats, kernel, stride, expand, out) = (1,3,1,1,4), (1,5,2,2,6); head 8; 5 classes
conv("_conv_stem", 4, 3, 3); bn("_bn0", 4)
conv("_blocks.0._depthwise_conv", 4, 1, 3); bn("_blocks.0._bn1", 4)
conv("_blocks.0._project_conv", 4, 4, 1); bn("_blocks.0._bn2", 4)
conv("_blocks.1._expand_conv", 8, 4, 1); bn("_blocks.1._bn0", 8)
conv("_blocks.1._depthwise_conv", 8, 1, 5); bn("_blocks.1._bn1", 8)
conv("_blocks.1._project_conv", 6, 8, 1); bn("_blocks.1._bn2", 6)
conv("_conv_head", 8, 6, 1); bn("_bn1", 8)
sd["_fc.weight"] = torch.randn(5, 8) * 0.3
sd["_fc.bias"] = torch.randn(5) * 0.1
torch.save(sd, "tiny_lite.pth")


def same(x, k, s):
    def pad(n):
        out = -(-n // s)
        total = max((out - 1) * s + k - n, 0)
        return total // 2, total - total // 2

    (t, b), (l, r) = pad(x.shape[-2]), pad(x.shape[-1])
    return F.pad(x, (l, r, t, b))


def cbn(x, cname, bname, k, s, groups=1):
    x = F.conv2d(same(x, k, s), sd[cname + ".weight"], stride=s, groups=groups)
    return F.batch_norm(x, sd[bname + ".running_mean"], sd[bname + ".running_var"],
                        sd[bname + ".weight"], sd[bname + ".bias"], False, 0.0, 1e-3)


def r6(x):
    return x.clamp(0, 6)


x = torch.randn(2, 3, 16, 12)
h = r6(cbn(x, "_conv_stem", "_bn0", 3, 2))
y = r6(cbn(h, "_blocks.0._depthwise_conv", "_blocks.0._bn1", 3, 1, groups=4))
h = cbn(y, "_blocks.0._project_conv", "_blocks.0._bn2", 1, 1) + h
y = r6(cbn(h, "_blocks.1._expand_conv", "_blocks.1._bn0", 1, 1))
y = r6(cbn(y, "_blocks.1._depthwise_conv", "_blocks.1._bn1", 5, 2, groups=8))
h = cbn(y, "_blocks.1._project_conv", "_blocks.1._bn2", 1, 1)
spatial = r6(cbn(h, "_conv_head", "_bn1", 1, 1))
pooled = spatial.mean((2, 3))
logits = F.linear(pooled, sd["_fc.weight"], sd["_fc.bias"])
save_file({"input": x, "spatial": spatial.contiguous(), "pooled": pooled, "logits": logits},
          "tiny_lite_expected.safetensors")
