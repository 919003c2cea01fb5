"""Which embedding the inputs_embeds call form uses for decoder ids (properties/test_call_forms.embedding_module)."""

from __future__ import annotations

import pytest
import torch

from properties.test_call_forms import embedding_module


class _BareDecoder(torch.nn.Module):
    """A decoder that is a plain nn.Module, as FSMTDecoder is: no get_input_embeddings of its own."""

    def __init__(self):
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(5, 4)


class _Seq2Seq(torch.nn.Module):
    def __init__(self, decoder):
        super().__init__()
        self.shared = torch.nn.Embedding(5, 4)
        self.decoder = decoder

    def get_input_embeddings(self):
        return self.shared

    def get_decoder(self):
        return self.decoder


def test_bare_decoder_embedding_found_by_transformers_rule():
    model = _Seq2Seq(_BareDecoder())
    assert embedding_module(model, "decoder_input_ids") is model.decoder.embed_tokens
    assert embedding_module(model, "input_ids") is model.shared


def test_decoder_own_getter_wins():
    decoder = _BareDecoder()
    other = torch.nn.Embedding(5, 4)
    decoder.get_input_embeddings = lambda: other
    assert embedding_module(_Seq2Seq(decoder), "decoder_input_ids") is other


def test_decoder_without_embedding_is_not_silently_the_encoders():
    """Planted: a decoder with no embedding at all raises rather than borrowing the encoder's table."""
    with pytest.raises(NotImplementedError):
        embedding_module(_Seq2Seq(torch.nn.Module()), "decoder_input_ids")
