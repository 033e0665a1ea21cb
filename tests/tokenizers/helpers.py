"""Shared data for tokenizer tests: adversarial strings, hypothesis strategies, an independent HF reference,
and the count of property examples run (reported in docs/reliability.md)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from hypothesis import strategies as st

#: Strings that have tripped up GPT-2 re-implementations.
ADVERSARIAL = [
    "",
    " ",
    "x  ",
    "   \n\n\t  x",
    "a\n\n\tb",
    '.)\n\n"The',
    "a  \n\nb",
    "x \n y",
    "Hello  world",
    "I'll've",
    "don'T I'LL 's  's",
    "12345 1,000,000 3.14159 ٣٤ ६ ६६",
    "😀👍🏽 family: 👨‍👩‍👧",
    "日本語のテキスト、中文文本。한국어",
    "e\u0301 a\u0300\u0301 Z\u0351\u0353",
    "<|endoftext|>",
    "a <|endoftext|> b<|endoftext|><|endoftext|>c",
    "<|endoftext",
    "tabs\tand\r\nCRLF\r\n",
    "\u00a0x \u3000y \u2009z \u2028w \x85v \x1cu \vt \u200bs",
    "  leading and trailing  ",
    "!!! ??? ... --- ''' \"\"\"",
    "\x00\x01 control",
]

#: Pieces that hypothesis strings are built from (whitespace runs, contractions, specials, scripts).
TRICKY_PIECES = [
    " ",
    "  ",
    "\n",
    "\n\n",
    "\t",
    "\r\n",
    "\u00a0",
    "\u3000",
    "\x85",
    "'s",
    "'ll",
    "'",
    "ve",
    "a",
    "Z",
    "é",
    "e\u0301",
    "1",
    "42",
    "!",
    "?!",
    "<|endoftext|>",
    "日本",
    "😀",
    "६",
    "\u2028",
    "\v",
]


#: Random text without surrogates or code points unassigned in this Python's Unicode tables
#: (libraries built on newer Unicode versions may classify those differently). Lone surrogates are not
#: Unicode scalar values and cannot occur in UTF-8 text; the BPE tokenizers encode one as U+FFFD.
UNICODE_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs", "Cn")), max_size=60)
#: Text biased towards whitespace, contractions, digits and special tokens.
TRICKY_TEXT = st.lists(st.sampled_from(TRICKY_PIECES), max_size=25).map("".join)

#: Examples each property test has run this session, by property (the tokenizers conftest reports them).
PROPERTY_EXAMPLES: Counter[str] = Counter()


def hf_reference(directory: Path, special_tokens: list[str]):
    """An independent GPT-2-style tokenizer: HF ``tokenizers`` BPE over the same files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    model = models.BPE.from_file(str(directory / "encoder.json"), str(directory / "vocab.bpe"))
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(special_tokens)
    return tok
