"""Writes a small, randomly initialised ECAPA model folder for tests.

The folder has the layout of `speechbrain/spkrec-ecapa-voxceleb` (its
hyperparams.yaml still says `pretrained_path: speechbrain/spkrec-ecapa-voxceleb`,
as the published one does), so loading it exercises the production code path,
including the offline override, without downloading the 80 MB real model.
Embeddings from it carry no speaker information.
"""

from __future__ import annotations

from pathlib import Path

import torch

EMBEDDING_DIM = 32
N_SPEAKERS = 4
CHANNELS = [32, 32, 32, 32, 96]

HYPERPARAMS = f"""\
# Small random ECAPA-TDNN for tests, modelled on speechbrain/spkrec-ecapa-voxceleb.
n_mels: 80
emb_dim: {EMBEDDING_DIM}

# As in the published file; authsvc overrides it with the local folder.
pretrained_path: speechbrain/spkrec-ecapa-voxceleb

out_n_neurons: {N_SPEAKERS}

compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: {CHANNELS}
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 16
    se_channels: 16
    lin_neurons: !ref <emb_dim>

classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: !ref <emb_dim>
    out_neurons: !ref <out_n_neurons>

mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    mean_var_norm_emb: !ref <mean_var_norm_emb>
    classifier: !ref <classifier>

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        mean_var_norm_emb: !ref <mean_var_norm_emb>
        classifier: !ref <classifier>
        label_encoder: !ref <label_encoder>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
        mean_var_norm_emb: !ref <pretrained_path>/mean_var_norm_emb.ckpt
        classifier: !ref <pretrained_path>/classifier.ckpt
        label_encoder: !ref <pretrained_path>/label_encoder.txt
"""


def make_small_ecapa_folder(path: Path, *, seed: int = 0) -> Path:
    """Write the model folder at `path` (created if needed) and return it.

    Same `seed`, same weights, hence the same encoder `version`.
    """
    from speechbrain.dataio.encoder import CategoricalEncoder
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = ECAPA_TDNN(
            input_size=80,
            channels=CHANNELS,
            kernel_sizes=[5, 3, 3, 3, 1],
            dilations=[1, 2, 3, 4, 1],
            attention_channels=16,
            se_channels=16,
            lin_neurons=EMBEDDING_DIM,
        )
        classifier = Classifier(input_size=EMBEDDING_DIM, out_neurons=N_SPEAKERS)
        emb_stats = {
            "count": 1000,
            "glob_mean": 0.1 * torch.randn(EMBEDDING_DIM),
            "glob_std": torch.ones(EMBEDDING_DIM),
        }
    finally:
        torch.random.set_rng_state(generator_state)

    (path / "hyperparams.yaml").write_text(HYPERPARAMS, encoding="utf-8")
    torch.save(model.state_dict(), path / "embedding_model.ckpt")
    torch.save(classifier.state_dict(), path / "classifier.ckpt")
    torch.save(emb_stats, path / "mean_var_norm_emb.ckpt")
    labels = CategoricalEncoder()
    labels.update_from_iterable([f"spk{i}" for i in range(N_SPEAKERS)])
    labels.save(path / "label_encoder.txt")
    return path
