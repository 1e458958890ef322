"""The weight generator: a chunk VAE from weights to latents, then latent diffusion
(diffusers' DDPM schedule for training, DDIM for fast sampling, v-prediction,
`clip_sample=False`), optionally conditioned on a dataset embedding. Training goes through
the shared accelerate loop (`zoo.training.train_model`) with small objective adapters."""
from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from zoo.determinism import reproducible_on_self
from zoo.training import TrainParams, train_model

from .layout import Normaliser, WeightLayout
from .nets import ChunkVAE, Denoiser, SetEncoder

TRAIN_TIMESTEPS = 1000


def schedulers():
    from diffusers import DDIMScheduler, DDPMScheduler

    ddpm = DDPMScheduler(num_train_timesteps=TRAIN_TIMESTEPS, beta_schedule="squaredcos_cap_v2",
                         prediction_type="v_prediction", clip_sample=False)
    return ddpm, DDIMScheduler.from_config(ddpm.config, clip_sample=False, set_alpha_to_one=True)


class _Objective:
    """Adapts a batch sampler and a loss to the shared training loop's task interface."""

    def __init__(self, data: dict[str, torch.Tensor], loss: Callable[[nn.Module, dict], torch.Tensor]):
        self.data, self._loss = data, loss

    def train_batches(self, config: dict, batch_size: int, generator: torch.Generator) -> Iterator[dict]:
        n = len(next(iter(self.data.values())))
        while True:
            idx = torch.randint(0, n, (min(batch_size, n),), generator=generator)
            yield {k: v[idx] for k, v in self.data.items()}

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return self._loss(model, batch)


class WeightGenerator(nn.Module):
    def __init__(self, layout: WeightLayout, latent: int = 16, cond_classes: int = 0, cond_input: int = 0,
                 hidden: int = 512, depth: int = 4, squash: bool = False):
        super().__init__()
        self.layout = layout
        self.vae = ChunkVAE(layout.chunks, layout.chunk, latent, hidden, squash=squash)
        self.set_encoder = SetEncoder(cond_classes, cond_input) if cond_classes else None
        self.denoiser = Denoiser(layout.chunks * latent, 64 if cond_classes else 0, hidden, depth)
        n = len(layout.names)
        self.register_buffer("weight_mean", torch.zeros(n))
        self.register_buffer("weight_std", torch.ones(n))
        self.register_buffer("latent_scale", torch.ones(()))

    @property
    def normaliser(self) -> Normaliser:
        return Normaliser(self.layout, self.weight_mean, self.weight_std)

    def describe(self) -> dict[str, Any]:
        return {"layout": self.layout.to_json(), "latent": self.vae.latent,
                "cond_classes": self.set_encoder.label.num_embeddings if self.set_encoder else 0,
                "cond_input": self.set_encoder.per_class[0].in_features - 17 if self.set_encoder else 0,
                "hidden": self.denoiser.inp.out_features, "depth": len(self.denoiser.blocks), "squash": self.vae.squash,
                "prediction_type": "v_prediction", "num_train_timesteps": TRAIN_TIMESTEPS}

    @classmethod
    def from_description(cls, d: dict) -> "WeightGenerator":
        return cls(WeightLayout.from_json(d["layout"]), d["latent"], d["cond_classes"], d["cond_input"], d["hidden"],
                   d["depth"], d.get("squash", False))

    # --- stage 1: weights <-> latents ---------------------------------------------------------
    @reproducible_on_self
    def fit_vae(self, vectors: torch.Tensor, steps: int, lr: float = 1e-3, batch_size: int = 64, beta: float = 1e-4,
                seed: int = 0, progress=None, input_noise: float = 0.0, latent_noise: float = 0.0) -> list[float]:
        """Train the VAE on raw weight vectors [N, numel] (normalised here, per tensor). A
        squashing (p-diff) autoencoder trains p-diff's way: no KL, noise mixed into its input
        and latent (`input_noise`, `latent_noise`; 0 = clean), loss against the clean input."""
        norm = Normaliser.fit(self.layout, vectors)
        self.weight_mean.copy_(norm.mean)
        self.weight_std.copy_(norm.std)
        chunks = self.layout.to_chunks(norm(vectors))
        if (input_noise or latent_noise) and not self.vae.squash:
            raise ValueError("noise augmentation is p-diff's autoencoder training: build the generator with squash=True")

        def loss(vae: nn.Module, batch: dict) -> torch.Tensor:
            recon, kl = vae(batch["x"], input_noise=input_noise, latent_noise=latent_noise)
            return F.mse_loss(recon, batch["x"]) + beta * kl

        tp = TrainParams(task="weights", steps=steps, lr=lr, batch_size=batch_size, seed=seed)
        _, losses = train_model(self.vae, _Objective({"x": chunks}, loss), {}, tp, progress)
        return losses

    @reproducible_on_self
    @torch.no_grad()
    def encode(self, vectors: torch.Tensor) -> torch.Tensor:
        """Raw weight vectors -> flat latents (means), in the diffusion model's scale."""
        mu, _ = self.vae.eval().encode(self.layout.to_chunks(self.normaliser(vectors)))
        return mu.reshape(len(vectors), -1) / self.latent_scale

    @reproducible_on_self
    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = (latents * self.latent_scale).reshape(len(latents), self.layout.chunks, -1)
        return self.normaliser.inverse(self.layout.from_chunks(self.vae.eval().decode(z)))

    # --- stage 2: latent diffusion -------------------------------------------------------------
    @reproducible_on_self
    def fit_diffusion(self, vectors: torch.Tensor, summaries: torch.Tensor | None, steps: int, lr: float = 1e-3,
                      batch_size: int = 64, seed: int = 0, progress=None, uncond_prob: float = 0.1) -> list[float]:
        """Train the denoiser (and set encoder) on the zoo's latents, conditioned on each
        model's task summary when the generator is conditional."""
        mu, _ = self.vae.eval().encode(self.layout.to_chunks(self.normaliser(vectors)))
        mu = mu.detach().reshape(len(vectors), -1)
        self.latent_scale.copy_(mu.std().clamp_min(1e-6))
        data = {"z": mu / self.latent_scale}
        if self.set_encoder is not None:
            data["summary"] = summaries
        ddpm, _ = schedulers()
        parts = nn.ModuleDict({"denoiser": self.denoiser, **({"set_encoder": self.set_encoder} if self.set_encoder else {})})

        def loss(model: nn.Module, batch: dict) -> torch.Tensor:
            z = batch["z"]
            noise = torch.randn_like(z)
            t = torch.randint(0, TRAIN_TIMESTEPS, (len(z),), device=z.device)
            noisy = ddpm.add_noise(z, noise, t)
            cond = None
            if "summary" in batch:  # classifier-free guidance: learn the unconditional model too
                cond = model["set_encoder"](batch["summary"])
                keep = (torch.rand(len(z), 1, device=z.device) >= uncond_prob).float()
                cond = cond * keep
            return F.mse_loss(model["denoiser"](noisy, t, cond), ddpm.get_velocity(z, noise, t))

        tp = TrainParams(task="latents", steps=steps, lr=lr, batch_size=batch_size, seed=seed)
        _, losses = train_model(parts, _Objective(data, loss), {}, tp, progress)
        return losses

    @reproducible_on_self
    @torch.no_grad()
    def sample(self, n: int, summary: torch.Tensor | None = None, seed: int = 0, steps: int = 50,
               guidance: float = 2.0) -> torch.Tensor:
        """n raw weight vectors (seeded: the same seed gives the same weights). Conditional
        generators mix conditional and unconditional predictions (classifier-free guidance)."""
        _, ddim = schedulers()
        ddim.set_timesteps(steps)
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.denoiser.inp.in_features, generator=g)
        cond = None
        if self.set_encoder is not None:
            cond = self.set_encoder.eval()(summary.expand(n, -1, -1))
        self.denoiser.eval()
        for t in ddim.timesteps:
            v = self.denoiser(z, t.expand(n), cond)
            if cond is not None and guidance != 1.0:
                v = self.denoiser(z, t.expand(n), torch.zeros_like(cond)) * (1 - guidance) + v * guidance
            z = ddim.step(v, t, z).prev_sample
        return self.decode(z)
