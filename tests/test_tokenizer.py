import pytest
import torch

from vqclip.clip import default_tokenizer, tokenize
from vqclip.errors import ConfigError

SOT, EOT = 49406, 49407

# Ids from OpenCLIP 3.3.0's SimpleTokenizer (OpenAI's reference tokenizer), computed once
# outside the tests and pasted here.
REFERENCE_IDS = {
    "a photo of a cat": [320, 1125, 539, 320, 2368],
    "A Photo Of A CAT": [320, 1125, 539, 320, 2368],
    "Hello, world! How's it going?": [3306, 267, 1002, 256, 829, 568, 585, 1245, 286],
    "16:9 aspect ratio, pi is 3.14": [
        272, 277, 281, 280, 19681, 15893, 267, 5357, 533, 274, 269, 272, 275,
    ],
    "café au lait": [15304, 2566, 572, 585],
    "東京タワー": [48338, 21078, 105, 34941, 2429, 107, 30391],
    "a painting of a 🐱 in the style of 🎨": [
        320, 3086, 539, 320, 22979, 530, 518, 1844, 539, 13461,
    ],
    # Mojibake of an em dash, repaired by ftfy.
    "The Mona Lisa by Leonardo da Vinci â€” trending on artstation": [
        518, 19143, 7424, 638, 20282, 1140, 30199, 2005, 6087, 525, 1486, 2631,
    ],
    "salt &amp; pepper &amp;amp; more": [6611, 261, 8253, 261, 750],
    "   lots   of\twhitespace \n here  ": [2958, 539, 4699, 2138, 763],
    "don't stop, we'll see, they're here, I've, I'm, she'd": [
        847, 713, 1691, 267, 649, 1342, 862, 267, 889, 982, 763, 267, 328, 1200, 267, 328, 880,
        267, 1043, 1896,
    ],
    "matte painting of a ruined city, unreal engine, 4k": [
        19771, 3086, 539, 320, 17231, 1305, 267, 15636, 5857, 267, 275, 330,
    ],
    "": [],
    "naïve façade Ümlaut": [1097, 35689, 563, 778, 10067, 1928, 6522, 76, 1853, 339],
}  # fmt: skip

LONG_TEXT = "a very detailed oil painting of a lighthouse on a cliff at sunset " * 8
LONG_IDS = [SOT] + [
    320, 1070, 12609, 2870, 3086, 539, 320, 13717, 525, 320, 10625, 536, 3424,
] * 5 + [320, 1070, 12609, 2870, 3086, 539, 320, 13717, 525, 320, EOT]  # fmt: skip


@pytest.mark.parametrize("text", list(REFERENCE_IDS))
def test_encode_matches_reference_tokenizer(text):
    assert default_tokenizer().encode(text) == REFERENCE_IDS[text]


def test_tokenize_pads_with_zeros_after_start_and_end_tokens():
    out = tokenize(["a photo of a cat", "hello"], context_length=10)
    assert out.dtype == torch.long
    assert out.tolist() == [
        [SOT, 320, 1125, 539, 320, 2368, EOT, 0, 0, 0],
        [SOT, 3306, EOT, 0, 0, 0, 0, 0, 0, 0],
    ]
    assert torch.equal(tokenize("hello", context_length=10), out[1:])


def test_long_text_is_truncated_keeping_the_end_token_last():
    out = tokenize(LONG_TEXT)
    assert out.shape == (1, 77)
    assert out[0].tolist() == LONG_IDS


def test_special_ids_and_vocab_size():
    tok = default_tokenizer()
    assert (tok.sot_id, tok.eot_id, tok.vocab_size) == (SOT, EOT, 49408)


@pytest.mark.parametrize(
    ("text", "decoded"),
    [
        ("A Photo of a CAT", "a photo of a cat"),
        ("東京タワー", "東京タワー"),  # tokens end inside multi-byte characters
        ("The Mona Lisa â€” trending", "the mona lisa — trending"),
        ("café", "café"),
    ],
)
def test_decode_inverts_encode(text, decoded):
    tok = default_tokenizer()
    ids = tok.encode(text)
    assert tok.decode(ids) == decoded
    assert tok.encode(tok.decode(ids)) == ids


@pytest.mark.parametrize(
    ("texts", "context_length"), [(["ok"], 1), ([b"bytes"], 77), ("text", 7.5), (None, 77)]
)
def test_bad_arguments_raise_config_error(texts, context_length):
    with pytest.raises(ConfigError):
        tokenize(texts, context_length)
