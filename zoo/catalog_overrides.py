"""Per-architecture exceptions to the generic tiny builder (`zoo/catalog.py`), one table.

A row exists only where the generic shrink rules cannot work; each says why. `config` entries
are config kwargs applied after the generic shrink (a nested dict edits a sub-config of that
name); `skip` marks a model type that cannot run here at all, with the reason the catalogue
reports.
"""

from __future__ import annotations

# model_type -> {"config": {...}, "reason": "..."} or {"skip": "reason"}
OVERRIDES: dict[str, dict] = {
    "mamba2": {"config": {"num_heads": 8, "head_dim": 8},
               "reason": "validate_architecture: hidden_size * expand (32 * 2) must equal num_heads * head_dim (8 * 8)"},
    "kyutai_speech_to_text": {"config": {"ffn_dim": 38}, "reason": "validate_architecture: ffn_dim must be even"},
    "fun_asr_nano": {"config": {"adaptor_config": {"intermediate_size": 8}},
                     "reason": "validate_architecture: adaptor intermediate_size must equal text hidden_size // 4"},
    "lw_detr": {"config": {"backbone_config": {"num_windows": 4}},
                "reason": "validate_architecture: image_size / num_windows must be a multiple of sqrt(num_windows)"},
    "mpnet": {"config": {"relative_attention_num_buckets": 32},
              "reason": "MPNetEncoder.compute_position_bias buckets relative positions into a hardcoded 32 "
                        "(num_buckets=32) whatever config.relative_attention_num_buckets sizes the bias table: "
                        "fewer buckets raise IndexError (an upstream defect only for non-default configs)"},
    "depth_pro": {"config": {"patch_size": 32},
                  "reason": "validate_architecture: the image model's image_size (32) must equal the top-level patch_size"},
    "aria": {"config": {"projector_patch_to_query_dict": {16: 8}},
             "reason": "AriaProjector looks the image's patch count up in projector_patch_to_query_dict, whose "
                       "keys are the full-size counts (1225, 4900); the tiny 32-pixel image makes 16 patches"},
    "dory": {"config": {"n_input_layers": 1, "n_output_layers": 1},
             "reason": "n_input_layers and n_output_layers are parts of num_hidden_layers (the rest recur); "
                       "the generic rule leaves them larger than the shrunk stack (a negative recurrent count)"},
}
