"""Complete model inputs for a spec: the dict a subject's forward takes."""

from __future__ import annotations

from hypothesis import strategies as st

from strategies import audio, images, tokens


@st.composite
def model_inputs(draw, spec, *, batch_sizes=(1, 4), padding_side: str | None = None):
    """Every input the spec's model needs, batch 1..4, lengths 1..max, valid ids and values.

    Causal models get left padding (the layout generation uses), everything else right padding,
    unless `padding_side` says otherwise.
    """
    inputs = {}
    batch = None
    if spec.has("text"):
        side = padding_side or ("left" if spec.has("causal") else "right")
        inputs.update(
            draw(
                tokens.token_batch(
                    spec.vocab_size, spec.max_length, batch_sizes=batch_sizes,
                    pad_token_id=spec.pad_token_id if spec.pad_token_id is not None else 0,
                    padding_side=side, bos_token_id=spec.bos_token_id, eos_token_id=spec.eos_token_id,
                ),
                label="text",
            )
        )
        batch = inputs["input_ids"].shape[0]
    if spec.has("vision"):
        n = draw(st.integers(*batch_sizes), label="image batch size") if batch is None or spec.has("text") else batch
        inputs["pixel_values"] = draw(images.pixel_values(n, spec.num_channels, spec.image_size), label="pixels")
        batch = batch or n
    if spec.has("audio"):
        batch = draw(st.integers(*batch_sizes), label="batch size")
        inputs["input_features"] = draw(
            audio.input_features(batch, spec.num_mel_bins, spec.num_frames), label="features"
        )
    if spec.has("encoder_decoder"):
        inputs["decoder_input_ids"] = draw(
            tokens.decoder_ids(spec.decoder_vocab_size, spec.decoder_max_length, batch, spec.decoder_start_token_id),
            label="decoder",
        )
    return inputs
