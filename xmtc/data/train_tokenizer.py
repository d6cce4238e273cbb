"""Train an XLNet-style subword tokenizer on a corpus, offline.

``python -m xmtc.data.train_tokenizer --data data/eurlex57k-demo --output models/tok-eurlex57k-demo``

A SentencePiece-like Unigram model (``tokenizers`` library: NFKC, ``▁`` word boundaries, cased) with
XLNet's special tokens at XLNet's ids (``<unk>`` 0 ... ``<pad>`` 5 ... ``<eop>`` 8) and XLNet's
layout: ``tokens <sep> <cls>``, padded on the left, so the last position is always ``<cls>``. Saved as
a Hugging Face tokenizer directory that ``AutoTokenizer.from_pretrained(path)`` loads, like the real
``xlnet-base-cased`` tokenizer: it lets the demo and the tests run APLC-XLNet without a download.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from transformers import PreTrainedTokenizerFast

#: XLNet's special tokens in XLNet's id order (xlnet-base-cased: <unk>=0, <s>=1, </s>=2, <cls>=3, ...).
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<cls>", "<sep>", "<pad>", "<mask>", "<eod>", "<eop>"]


def train_unigram_tokenizer(texts: Sequence[str], vocab_size: int = 8000,
                            max_length: int = 512) -> PreTrainedTokenizerFast:
    """A cased Unigram tokenizer trained on ``texts``, wrapped as a transformers fast tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
    from tokenizers.models import Unigram

    tok = Tokenizer(Unigram())
    # XLNet's SentencePiece normalisation: NFKC, runs of spaces collapsed, no lower-casing
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, unk_token="<unk>",
                                      show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    sep, cls = tok.token_to_id("<sep>"), tok.token_to_id("<cls>")
    tok.post_processor = processors.TemplateProcessing(  # token type 2 for <cls>, as XLNet's tokenizer
        single="$A:0 <sep>:0 <cls>:2", pair="$A:0 <sep>:0 $B:1 <sep>:1 <cls>:2",
        special_tokens=[("<sep>", sep), ("<cls>", cls)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", cls_token="<cls>",
        sep_token="<sep>", pad_token="<pad>", mask_token="<mask>", additional_special_tokens=["<eod>", "<eop>"],
        padding_side="left", truncation_side="right", model_max_length=max_length)


def main(argv: Sequence[str] | None = None) -> Path:
    from xmtc.data.readers import read_split

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset directory (its training split is read)")
    p.add_argument("--output", required=True, help="directory to save the tokenizer to")
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--max-length", type=int, default=512, help="tokens kept per document (model_max_length)")
    p.add_argument("--split", default="train")
    args = p.parse_args(argv)
    texts = read_split(args.data, args.split).texts
    tokenizer = train_unigram_tokenizer(texts, vocab_size=args.vocab_size, max_length=args.max_length)
    out = Path(args.output)
    tokenizer.save_pretrained(str(out))
    print(f"trained a {len(tokenizer)}-token Unigram tokenizer on {len(texts)} documents of {args.data}; "
          f"saved to {out}")
    return out


if __name__ == "__main__":
    main()
