"""What config discovery cannot know: the valid values of some config arguments.

`strategies/configs.py` reads every config class generically (booleans, activation names, sizes by
name). This module holds the rest, as plain data:

- `NAME_ROLES`: what a size or string argument is, by its name (the same in every family);
- `NOT_DRAWN`: arguments that never change the eval forward of the model under test, with why;
- `FAMILY_RULES`: the one per-family table, keyed by config class name, for values only the
  family's code defines (kv heads dividing heads, head_dim, rope kinds, T5's gated activations and
  relative buckets, ...). A value may be a tuple, or a function of the config drawn so far (a
  dict of the effective kwargs) returning a tuple, for values that depend on other draws; where
the default is not among a function's values (kv heads 2 after drawing 1 head), a value is drawn
(the first value is where it shrinks).

Input-side sizes (vocab, positions, image and patch size, channels, mel bins, source positions,
token ids) are never drawn: every drawn config takes the inputs of the family's default spec.
"""

from __future__ import annotations

# -- sizes and strings by name (discovery: the same names in every family) ------------------------
WIDTH_NAMES = ("hidden_size", "n_embd", "d_model", "dim")  # kept: heads must divide it
LAYER_NAMES = ("num_hidden_layers", "n_layer", "n_layers", "num_layers", "num_decoder_layers",
               "encoder_layers", "decoder_layers")
HEAD_NAMES = ("num_attention_heads", "n_head", "n_heads", "num_heads", "encoder_attention_heads",
              "decoder_attention_heads")
FFN_NAMES = ("intermediate_size", "n_inner", "hidden_dim", "d_ff", "encoder_ffn_dim", "decoder_ffn_dim")
EPS_NAMES = ("layer_norm_eps", "layer_norm_epsilon", "rms_norm_eps")

LAYERS = (1, 2, 3)  # 1 finds per-layer indexing bugs, 3 an odd count
FFN_SIZES = (1, 8, 16, 37, 64)
EPS_VALUES = (1e-12, 1e-6, 1e-5)  # the eps values real checkpoints of these families use
# RoPE rotates pairs (>= 2), and dynamic NTK scaling raises its base to dim / (dim - 2): head dim 2 divides
# by zero (ZeroDivisionError in _compute_dynamic_ntk_parameters, measured); real checkpoints use >= 32.
MIN_HEAD_DIM = 4

NAME_ROLES = {
    **{name: "layers" for name in LAYER_NAMES},
    **{name: "heads" for name in HEAD_NAMES},
    **{name: "ffn" for name in FFN_NAMES},
    **{name: "eps" for name in EPS_NAMES},
}

# Layer counts drawn together (one draw sets every name of a group) by the shape-contract test only. Why: the shape contract
# (zoo/contract.py) reads one layer count per model for both stacks (decoder and encoder hidden
# states, CLIP's two towers); drawn apart, decoder_layers=1 fails as "missing decoder_hidden_states.2"
# (measured on whisper, t5, bart, clip). Remove a group once the contract reads each stack's count.
DRAWN_TOGETHER = (
    ("encoder_layers", "decoder_layers"),
    ("num_layers", "num_decoder_layers"),
    ("text_config.num_hidden_layers", "vision_config.num_hidden_layers"),
)

# -- never drawn -----------------------------------------------------------------------------------
NOT_DRAWN = {
    "use_return_dict": "a call style (return_dict), not a config",
    "is_decoder": "turns an encoder into a decoder: another subject kind, not a flag of this one",
    "add_cross_attention": "needs encoder_hidden_states, which the subject does not pass",
    "apply_spec_augment": "training only (Whisper masks features only in train mode)",
    "use_weighted_layer_sum": "read only by the audio-classification head",
    "summary_use_proj": "read only by the double-heads model",
    "summary_proj_to_labels": "read only by the double-heads model",
    "summary_type": "read only by the double-heads model",
    "summary_activation": "read only by the double-heads model",
    "pretraining_tp": "ignored by the transformers 5 forward",
}


# -- the per-family table --------------------------------------------------------------------------
def _divisors(n: int) -> tuple[int, ...]:
    return tuple(d for d in range(1, n + 1) if n % d == 0)


def kv_heads(config: dict) -> tuple[int, ...]:
    """MHA (kv heads = heads), GQA (a proper divisor) and MQA (1), largest first."""
    return _divisors(config["num_attention_heads"])[::-1]


def _head_dim(config: dict) -> int:
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]


def rope_kinds(config: dict) -> tuple[dict, ...]:
    """One `rope_parameters` per kind in `ROPE_INIT_FUNCTIONS`, each with the arguments it needs."""
    theta, short = 10000.0, config["max_position_embeddings"] // 2
    half = _head_dim(config) // 2
    return (
        {"rope_type": "default", "rope_theta": 500000.0},
        {"rope_type": "linear", "rope_theta": theta, "factor": 2.0},
        {"rope_type": "dynamic", "rope_theta": theta, "factor": 2.0},
        {"rope_type": "yarn", "rope_theta": theta, "factor": 2.0, "original_max_position_embeddings": short},
        {"rope_type": "llama3", "rope_theta": theta, "factor": 8.0, "low_freq_factor": 1.0,
         "high_freq_factor": 4.0, "original_max_position_embeddings": short},
        {"rope_type": "longrope", "rope_theta": theta, "short_factor": [1.0] * half, "long_factor": [2.0] * half,
         "original_max_position_embeddings": short},
    )


def t5_max_distance(config: dict) -> tuple[int, ...]:
    """T5's log-spaced buckets need `max_distance > num_buckets // 2` (the decoder's exact range):
    at equality the formula divides by log(1) = 0 and the NaN bucket index raises IndexError."""
    return tuple(d for d in (8, 16, 128) if d > config["relative_attention_num_buckets"] // 2)


def t5_feed_forward(config: dict) -> tuple[str, ...]:
    """T5 takes `"{gated-}<activation>"`: every ACT2FN name, plain or gated."""
    from transformers.activations import ACT2FN

    return tuple(sorted(ACT2FN)) + tuple(f"gated-{name}" for name in sorted(ACT2FN))


FAMILY_RULES: dict[str, dict[str, tuple | object]] = {
    "LlamaConfig": {
        "head_dim": (4, 16),  # independent of hidden / heads in LLaMA (q_proj is heads x head_dim)
        "num_key_value_heads": kv_heads,
        "rope_parameters": rope_kinds,
    },
    "T5Config": {
        "d_kv": (4, 16),  # T5's head dim is independent of d_model
        "feed_forward_proj": t5_feed_forward,
        # >= 4: the bidirectional encoder halves the buckets and halves them again (2 divides by zero)
        "relative_attention_num_buckets": (4, 32),
        "relative_attention_max_distance": t5_max_distance,
        "tie_word_embeddings": (False,),  # not in T5Config's signature; untied skips the d_model**-0.5 rescale
    },
}
