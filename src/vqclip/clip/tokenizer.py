"""CLIP's byte-level BPE tokenizer (Radford et al. 2021), reimplemented from its description.

Text is cleaned (ftfy, HTML entities, whitespace), lower-cased, split into words, numbers and
punctuation runs, and each piece's UTF-8 bytes are merged with OpenAI's 48,894 BPE merges
(bpe_simple_vocab_16e6.txt.gz, MIT licence, see VOCAB_LICENSE.txt). Ids match OpenAI's and
OpenCLIP's tokenizers, which the CLIP text tower was trained with.
"""

from __future__ import annotations

import functools
import gzip
import html
import itertools
from pathlib import Path

import ftfy
import regex
import torch

from vqclip.errors import ConfigError

VOCAB_PATH = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
CONTEXT_LENGTH = 77
_NUM_MERGES = 49152 - 256 - 2  # vocab 49408 = 512 byte tokens + merges + 2 specials
_SOT, _EOT = "<start_of_text>", "<end_of_text>"
_END_OF_WORD = "</w>"

# Contractions, letter runs, single digits, runs of other non-space characters.
_PIECE = regex.compile(
    rf"""{_SOT}|{_EOT}|'s|'t|'re|'ve|'m|'ll|'d|\p{{L}}+|\p{{N}}|[^\s\p{{L}}\p{{N}}]+""",
    regex.IGNORECASE,
)


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """A reversible map from the 256 byte values to printable characters.

    Printable Latin-1 bytes stand for themselves; the rest (controls, space, ...) are mapped to
    code points from 256 upward, so BPE never sees whitespace or control characters.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def clean_text(text: str) -> str:
    """The normalisation CLIP applies before tokenizing."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))  # twice: entities are often double-escaped
    return " ".join(text.split()).lower()


class ClipTokenizer:
    """Text <-> CLIP token ids. Build once (reading the vocabulary takes ~0.2 s): use
    `default_tokenizer()`."""

    def __init__(self, vocab_path: str | Path = VOCAB_PATH) -> None:
        with gzip.open(vocab_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        # Line 0 is a version header; only the first _NUM_MERGES merges make up the vocabulary.
        merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        symbols = list(self.byte_encoder.values())
        vocab = [
            *symbols,
            *(s + _END_OF_WORD for s in symbols),
            *("".join(m) for m in merges),
            _SOT,
            _EOT,
        ]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.decoder = dict(enumerate(vocab))
        self.ranks = {merge: i for i, merge in enumerate(merges)}
        self.sot_id = self.encoder[_SOT]
        self.eot_id = self.encoder[_EOT]
        self.vocab_size = len(vocab)
        # Per instance, so a cache never outlives its vocabulary.
        self._bpe = functools.lru_cache(maxsize=65536)(self._bpe_uncached)

    def _bpe_uncached(self, piece: str) -> tuple[str, ...]:
        """Merge a piece's symbols, lowest-ranked adjacent pair first, until none merges."""
        if piece in (_SOT, _EOT):
            return (piece,)
        word = (*piece[:-1], piece[-1] + _END_OF_WORD)
        while len(word) > 1:
            pairs = itertools.pairwise(word)
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        return word

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without start/end tokens."""
        ids: list[int] = []
        for piece in _PIECE.findall(clean_text(text)):
            symbols = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[token] for token in self._bpe(symbols))
        return ids

    def decode(self, ids: list[int]) -> str:
        """Text of token ids (as cleaned: lower case, single spaces)."""
        data = bytearray()
        for i in ids:
            token = self.decoder[int(i)]
            word_end = token.endswith(_END_OF_WORD)
            data.extend(self.byte_decoder[c] for c in token.removesuffix(_END_OF_WORD))
            if word_end:
                data.extend(b" ")
        # A token can end inside a multi-byte character, so decode the bytes only once joined.
        return data.decode("utf-8", errors="replace").rstrip()

    def __call__(
        self, texts: str | list[str], context_length: int = CONTEXT_LENGTH
    ) -> torch.Tensor:
        """Token ids (N, context_length): start, text, end, zero padding.

        Too long texts are cut, keeping the end token last (the text tower pools there).
        """
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list | tuple) or not all(isinstance(t, str) for t in texts):
            raise ConfigError(f"tokenize expects a string or a list of strings, got {texts!r}")
        if isinstance(context_length, bool) or not isinstance(context_length, int):
            raise ConfigError(f"context_length must be an integer, got {context_length!r}")
        if context_length < 2:
            raise ConfigError(f"context_length must be at least 2, got {context_length}")
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [*[self.sot_id, *self.encode(text)][: context_length - 1], self.eot_id]
            out[row, : len(ids)] = torch.tensor(ids)
        return out


@functools.lru_cache(maxsize=1)
def default_tokenizer() -> ClipTokenizer:
    """The tokenizer with CLIP's own vocabulary, built on first use."""
    return ClipTokenizer()


def tokenize(texts: str | list[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """CLIP token ids (N, context_length) for one or more texts; see `ClipTokenizer.__call__`."""
    return default_tokenizer()(texts, context_length)
