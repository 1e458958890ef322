"""Weight generation: learn the distribution of weights in a zoo and sample new, working
weights - D2NWG (dataset-conditioned latent diffusion) and p-diff (unconditional latent
diffusion over a parameter subset of one training run)."""
