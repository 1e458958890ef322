"""The generator's networks: a chunk VAE (weights <-> latents), a dataset set-encoder
(a few labelled examples -> a task embedding), and the latent denoiser."""
from __future__ import annotations

import math

import torch
from torch import nn


def mlp(d_in: int, hidden: int, d_out: int, depth: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(d_in, hidden), nn.SiLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(hidden, hidden), nn.SiLU()]
    return nn.Sequential(*layers, nn.Linear(hidden, d_out))


def mix_noise(x: torch.Tensor, factor: float) -> torch.Tensor:
    """p-diff's noise augmentation, `(1 - f)·x + f·ε` with ε ~ N(0, 1) (reference
    `ODEncoder2Decoder.add_noise`: a convex mix, not `x + f·ε`); f = 0 returns x itself."""
    if factor == 0:
        return x
    return torch.randn_like(x) * factor + x * (1 - factor)


class ChunkVAE(nn.Module):
    """Each chunk (with an embedding of its position) -> a small Gaussian latent and back;
    KL-regularised so latents stay near a unit ball the diffusion model can cover.
    With `squash` (p-diff) it is instead a plain autoencoder whose latent is tanh-bounded,
    as p-diff's encoder ends in a Tanh, so latent noise of factor f means what it means there."""

    def __init__(self, chunks: int, chunk: int, latent: int = 16, hidden: int = 512, pos: int = 32,
                 squash: bool = False):
        super().__init__()
        self.latent, self.squash = latent, squash
        self.pos = nn.Embedding(chunks, pos)
        self.encoder = mlp(chunk + pos, hidden, 2 * latent)
        self.decoder = mlp(latent + pos, hidden, chunk)

    def _pos(self, x: torch.Tensor) -> torch.Tensor:
        return self.pos.weight.unsqueeze(0).expand(x.shape[0], -1, -1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(torch.cat([x, self._pos(x)], -1)).chunk(2, -1)
        return (mu.tanh() if self.squash else mu), logvar.clamp(-10, 5)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([z, self._pos(z)], -1))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, input_noise: float = 0.0,
                latent_noise: float = 0.0):
        """Training reconstruction and KL; a squashing autoencoder has no KL (0) and takes
        p-diff's noisy path instead of posterior sampling."""
        if self.squash:
            return self.noisy_reconstruction(x, input_noise, latent_noise), x.new_zeros(())
        mu, logvar = self.encode(x)
        noise = torch.randn(mu.shape, generator=generator, device=mu.device) if self.training else 0
        z = mu + noise * (0.5 * logvar).exp()
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1).mean()
        return self.decode(z), kl

    def noisy_reconstruction(self, x: torch.Tensor, input_noise: float, latent_noise: float) -> torch.Tensor:
        """p-diff's training-time path (reference `ODEncoder2Decoder.forward`): noise mixed
        into the input, then into the latent, the latent clamped to [-1, 1], decoded. The
        loss compares this with the clean x; encode/decode alone stay noise-free."""
        z, _ = self.encode(mix_noise(x, input_noise))
        return self.decode(mix_noise(z, latent_noise).clamp(-1, 1))


class SetEncoder(nn.Module):
    """A task from a few labelled examples: per class, the mean of its examples (order-free
    over examples) and whether the class is present, encoded with its label's embedding;
    the per-class codes are joined in label order, so which label holds what stays visible
    (permuted labels give different tasks)."""

    def __init__(self, num_classes: int, d_in: int, dim: int = 64, hidden: int = 128, per_class: int = 16):
        super().__init__()
        self.label = nn.Embedding(num_classes, 16)
        self.per_class = mlp(d_in + 1 + 16, hidden, per_class)
        self.out = mlp(num_classes * per_class, hidden, dim, depth=1)

    def forward(self, summary: torch.Tensor) -> torch.Tensor:
        """summary: [B, classes, d_in + 1] (mean input, presence flag)."""
        labels = self.label.weight.unsqueeze(0).expand(summary.shape[0], -1, -1)
        return self.out(self.per_class(torch.cat([summary, labels], -1)).flatten(1))


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    args = t.float().unsqueeze(-1) * freqs
    return torch.cat([args.sin(), args.cos()], -1)


class Block(nn.Module):
    def __init__(self, dim: int, cond: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.film = nn.Linear(cond, 2 * dim)
        self.ff = mlp(dim, 2 * dim, dim, depth=1)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(c).chunk(2, -1)
        return x + self.ff(self.norm(x) * (1 + scale) + shift)


class Denoiser(nn.Module):
    """A residual MLP over the flattened latent, modulated (FiLM) by the timestep and,
    for conditional generators, the task embedding."""

    def __init__(self, d_latent: int, cond_dim: int = 0, hidden: int = 512, depth: int = 4):
        super().__init__()
        self.cond_dim = cond_dim
        c = 128
        self.time = mlp(c, c, c, depth=1)
        self.cond = nn.Linear(cond_dim, c) if cond_dim else None
        self.inp = nn.Linear(d_latent, hidden)
        self.blocks = nn.ModuleList(Block(hidden, c) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, d_latent))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        c = self.time(timestep_embedding(t, 128))
        if self.cond is not None and cond is not None:
            c = c + self.cond(cond)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, c)
        return self.out(h)
