"""mergekit-moe in weightzoo: a Mixtral-style sparse mixture of experts assembled from dense
Llama/Mistral models that share a base (`zoo moe CONFIG.yaml`, operator `merge.moe`).

- `config.py`: mergekit-moe's YAML, read with mergekit's meaning (refusals as one line);
- `params.py`: the operator's params (what the run records: the whole config, prompts included);
- `router.py`: the gate vectors, computed as mergekit's `moe/router.py` does;
- `layout.py`: the Mixtral checkpoint (tensor names, shapes, config) and the checks on the inputs;
- `operator.py`: the operator `merge.moe` and the catalog-level `build_moe`.

Light on purpose (no torch): the CLI imports `merging.commands_moe` at start-up.
"""
