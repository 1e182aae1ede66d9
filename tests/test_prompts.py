import io
import math
import urllib.error
import urllib.request

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from PIL import Image

from vqclip.errors import ConfigError, VQClipError
from vqclip.generate.prompts import (
    Prompt,
    PromptSpec,
    embed_text_prompt,
    load_image,
    noise_embedding,
    parse_image_prompts,
    parse_noise_prompts,
    parse_prompt,
    parse_prompts,
    parse_story,
)

# strategies: texts without "|", some dense in colons, digits and URL-like pieces

_colon_heavy = st.text(alphabet=st.sampled_from(list("ab 16:9/.\\-e")), min_size=1, max_size=30)
_any_text = st.text(
    alphabet=st.characters(blacklist_characters="|", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=30,
)
texts = st.one_of(_colon_heavy, _any_text).filter(lambda t: t.strip())
weights = st.floats(allow_nan=False, allow_infinity=False).filter(lambda w: w != 0)
stops = st.floats(allow_nan=False)


# parsing: properties


def _parses_to_itself(text: str) -> bool:
    try:
        return parse_prompt(text).value == text.strip()
    except ConfigError:  # e.g. ":1", a bare weight with no text
        return False


@given(texts, weights, stops)
def test_text_weight_stop_round_trip(text, weight, stop):
    spec = parse_prompt(f"{text}:{weight!r}:{stop!r}")
    assert spec == PromptSpec("text", text.strip(), weight, stop)


@given(texts, weights)
def test_text_weight_round_trip_when_text_does_not_end_in_a_number(text, weight):
    # A text that itself ends in ":<number>" is covered by the rule tests below.
    assume(_parses_to_itself(text))
    spec = parse_prompt(f"{text}:{weight!r}")
    assert (spec.value, spec.weight, spec.stop) == (text.strip(), weight, -math.inf)


@given(st.text(alphabet=st.sampled_from(list("abcd :/\\._-")), min_size=1).filter(str.strip))
def test_text_without_number_fields_is_kept_whole(text):
    assert parse_prompt(text) == PromptSpec("text", text.strip())


@given(st.lists(st.tuples(texts, weights, stops), min_size=1, max_size=5))
def test_parse_prompts_of_joined_prompts_gives_them_back(items):
    joined = " | ".join(f"{t}:{w!r}:{s!r}" for t, w, s in items)
    assert parse_prompts(joined) == [PromptSpec("text", t.strip(), w, s) for t, w, s in items]


# parsing: examples of the rule


@pytest.mark.parametrize(
    ("s", "value", "weight", "stop"),
    [
        ("a cat", "a cat", 1.0, -math.inf),
        ("a cat:0.5", "a cat", 0.5, -math.inf),
        ("a cat:2:0.1", "a cat", 2.0, 0.1),
        ("  a cat : 0.5  ", "a cat", 0.5, -math.inf),  # spaces around fields, as Crowson's
        ("a cat:-1", "a cat", -1.0, -math.inf),
        ("a cat:1e-3:-1.5E2", "a cat", 1e-3, -150.0),
        ("a cat:1:inf", "a cat", 1.0, math.inf),
        ("a cat:1:-INF", "a cat", 1.0, -math.inf),
        ("a cat:.5:5.", "a cat", 0.5, 5.0),
        ("a 16:9 photo", "a 16:9 photo", 1.0, -math.inf),
        ("a 16:9 photo:2", "a 16:9 photo", 2.0, -math.inf),
        ("ratio 16:9", "ratio 16", 9.0, -math.inf),  # documented: a trailing number is a weight
        ("ratio 16:9:1:-inf", "ratio 16:9", 1.0, -math.inf),  # ...kept by giving both fields
        ("a cat: 0. 5", "a cat: 0. 5", 1.0, -math.inf),  # no spaces inside a number
        ("a cat:nan", "a cat:nan", 1.0, -math.inf),  # nan is not a number field
        ("a cat:", "a cat:", 1.0, -math.inf),
    ],
)
def test_parse_prompt_examples(s, value, weight, stop):
    assert parse_prompt(s) == PromptSpec("text", value, weight, stop)


@pytest.mark.parametrize(
    ("s", "value", "weight", "stop"),
    [
        ("http://x.com/a.png", "http://x.com/a.png", 1.0, -math.inf),
        ("https://x.com/a.png:0.5", "https://x.com/a.png", 0.5, -math.inf),
        ("https://x.com/a.png:0.5:0.1", "https://x.com/a.png", 0.5, 0.1),
        ("http://x.com:8080/a.png", "http://x.com:8080/a.png", 1.0, -math.inf),
        ("http://x.com:8080", "http://x.com:8080", 1.0, -math.inf),  # a port, not a weight
        ("http://x.com:8080:2", "http://x.com:8080", 2.0, -math.inf),
        ("C:\\img.png", "C:\\img.png", 1.0, -math.inf),
        ("C:\\img.png:0.5:0.1", "C:\\img.png", 0.5, 0.1),
        ("img.png:0.5:0.1", "img.png", 0.5, 0.1),
    ],
)
def test_parse_image_prompt_paths_and_urls(s, value, weight, stop):
    assert parse_image_prompts(s) == [PromptSpec("image", value, weight, stop)]


def test_parse_prompts_splits_on_bars_and_strips():
    specs = parse_prompts(" a red barn:1 |blurry:-0.5|  c ")
    assert [(p.value, p.weight) for p in specs] == [("a red barn", 1.0), ("blurry", -0.5), ("c", 1)]
    assert len(parse_prompts("a|b|c")) == 3


def test_blank_string_is_no_prompts():
    assert parse_prompts("") == []
    assert parse_prompts("   ") == []


@pytest.mark.parametrize(("s", "where"), [("a||b", "prompt 2 of 3"), ("a|", "prompt 2 of 2")])
def test_empty_piece_is_an_error_naming_its_position(s, where):
    with pytest.raises(ConfigError, match=rf"{where}.*empty"):
        parse_prompts(s)


@pytest.mark.parametrize("s", [":0.5", "  :1:2", " : 1 "])
def test_prompt_without_text_is_an_error(s):
    with pytest.raises(ConfigError, match="has no text"):
        parse_prompt(s)


def test_error_in_a_piece_names_its_position():
    with pytest.raises(ConfigError, match=r"prompt 2 of 2.*weight 0 has no effect"):
        parse_prompts("a|b:0")


@pytest.mark.parametrize(
    ("s", "match"), [("a:0", "weight 0"), ("a:inf", "finite"), ("a:1e999", "finite")]
)
def test_bad_weights_are_errors(s, match):
    with pytest.raises(ConfigError, match=match):
        parse_prompt(s)


def test_prompt_spec_validates_on_construction():
    with pytest.raises(ConfigError, match="kind"):
        PromptSpec("sound", "x")
    with pytest.raises(ConfigError, match="stop"):
        PromptSpec("text", "x", 1.0, math.nan)
    with pytest.raises(ConfigError, match="non-empty"):
        PromptSpec("text", "  ")
    with pytest.raises(ConfigError, match="seed"):
        PromptSpec("noise", -1)
    assert PromptSpec("text", "x", 2).weight == 2.0 and isinstance(
        PromptSpec("text", "x", 2).weight, float
    )


# noise prompts


def test_parse_noise_prompts_pairs_seeds_with_weights():
    assert parse_noise_prompts([3, 7], [0.5, -1.0]) == [
        PromptSpec("noise", 3, 0.5),
        PromptSpec("noise", 7, -1.0),
    ]
    assert [p.weight for p in parse_noise_prompts([3, 7])] == [1.0, 1.0]


def test_parse_noise_prompts_rejects_unequal_lengths_and_bad_seeds():
    with pytest.raises(ConfigError, match="one noise prompt weight per seed"):
        parse_noise_prompts([1, 2], [1.0])
    with pytest.raises(ConfigError, match="seed"):
        parse_noise_prompts([True])


def test_noise_prompt_string_syntax():
    assert parse_prompt("42:0.5", kind="noise") == PromptSpec("noise", 42, 0.5)
    with pytest.raises(ConfigError, match="integer seed"):
        parse_prompt("forty:0.5", kind="noise")


def test_noise_embedding_is_seeded_normal():
    a, b = noise_embedding(5, 512), noise_embedding(5, 512)
    assert a.shape == (1, 512)
    assert torch.equal(a, b)
    assert not torch.equal(a, noise_embedding(6, 512))
    assert abs(a.mean().item()) < 0.2 and 0.8 < a.std().item() < 1.2
    with pytest.raises(ConfigError, match="dim"):
        noise_embedding(5, 0)


# Prompt loss


def _unit(*values):
    return torch.nn.functional.normalize(torch.tensor([values], dtype=torch.float32), dim=-1)


def test_prompt_loss_is_weighted_mean_spherical_distance():
    prompt = Prompt(_unit(1.0, 0.0) * 7, weight=2.0)  # the embedding's length does not matter
    cutouts = torch.cat([_unit(1.0, 0.0), _unit(0.0, 1.0)])  # (N=2, D=2): distances 0, pi^2/8
    loss, dist = prompt(cutouts)
    assert loss.shape == () and dist.shape == ()
    assert dist.item() == pytest.approx(math.pi**2 / 16)
    assert loss.item() == pytest.approx(2.0 * math.pi**2 / 16)
    assert not dist.requires_grad


def test_prompt_averages_over_several_embeddings_and_computes_in_fp32():
    prompt = Prompt(torch.cat([_unit(1.0, 0.0), _unit(-1.0, 0.0)]))  # (P=2, D)
    loss, _ = prompt(_unit(1.0, 0.0).half())
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(math.pi**2 / 4, abs=1e-5)


def test_prompt_stop_cuts_gradient_but_reports_value():
    cutouts = _unit(0.6, 0.8).requires_grad_(True)
    free, stopped = Prompt(_unit(1.0, 0.0)), Prompt(_unit(1.0, 0.0), stop=2.0)
    loss_free, _ = free(cutouts)
    loss_stopped, dist = stopped(cutouts)
    assert dist.item() < 2.0  # below the stop
    assert loss_stopped.item() == pytest.approx(loss_free.item())
    (g_free,) = torch.autograd.grad(loss_free, cutouts)
    (g_stopped,) = torch.autograd.grad(loss_stopped, cutouts)
    assert g_free.abs().sum() > 0
    assert torch.equal(g_stopped, torch.zeros_like(g_stopped))


def test_negative_weight_pushes_away():
    prompt = Prompt(_unit(1.0, 0.0), weight=-1.0)
    x = _unit(0.8, 0.6).requires_grad_(True)
    loss, before = prompt(x)
    assert loss.item() == pytest.approx(-before.item())
    loss.backward()
    with torch.no_grad():
        _, after = prompt(x - 0.1 * x.grad)
    assert after > before


def test_negative_weight_stop_applies_to_minus_distance():
    prompt = Prompt(_unit(1.0, 0.0), weight=-1.0, stop=-0.5)
    x = _unit(0.0, 1.0).requires_grad_(True)  # d = pi^2/8 > 0.5: far enough, stop pushing
    loss, _ = prompt(x)
    (g,) = torch.autograd.grad(loss, x)
    assert torch.equal(g, torch.zeros_like(g))


def test_batched_prompt_losses_are_independent_per_image():
    torch.manual_seed(0)
    prompt = Prompt(torch.randn(1, 8), weight=1.5)
    embeds = torch.randn(3, 4, 8, requires_grad=True)  # (B, N, D)
    loss, dist = prompt(embeds)
    assert loss.shape == (3,) and dist.shape == (3,)
    for b in range(3):
        assert loss[b].item() == pytest.approx(prompt(embeds[b])[0].item(), abs=1e-6)
    (grad,) = torch.autograd.grad(loss[0], embeds)
    assert grad[0].abs().sum() > 0
    assert torch.equal(grad[1:], torch.zeros_like(grad[1:]))


def test_prompt_rejects_mismatched_dims_and_bad_weight():
    prompt = Prompt(torch.randn(1, 8))
    with pytest.raises(ConfigError, match="cutouts' CLIP model"):
        prompt(torch.randn(4, 16))
    with pytest.raises(ConfigError, match="weight 0"):
        Prompt(torch.randn(1, 8), weight=0.0)
    with pytest.raises(ConfigError, match="shape"):
        Prompt(torch.randn(1, 2, 8))


def test_prompt_keeps_weight_and_stop_and_does_not_save_its_embedding():
    prompt = Prompt(torch.randn(8), -2.0, 0.3)
    assert (prompt.weight, prompt.stop) == (-2.0, 0.3)
    assert prompt.embed.shape == (1, 8)
    assert prompt.state_dict() == {}


# text embedding


class _FakeClip(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Embedding(256, 6)

    def tokenize(self, texts):
        return torch.tensor([[ord(c) % 256 for c in t[:5].ljust(5)] for t in texts])

    def encode_text(self, tokens):
        return self.proj(tokens).sum(1) * 10  # (N, D), deliberately not unit length


def test_embed_text_prompt_is_unit_length_detached_and_deterministic():
    clip = _FakeClip()
    e = embed_text_prompt(clip, "a cat")
    assert e.shape == (1, 6) and e.dtype == torch.float32
    assert e.norm().item() == pytest.approx(1.0)
    assert not e.requires_grad
    assert torch.equal(e, embed_text_prompt(clip, "a cat"))
    assert not torch.equal(e, embed_text_prompt(clip, "a dog"))


# images


def _png_bytes(color=(255, 0, 0), mode="RGB", size=(4, 3)):
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_load_image_reads_rgb_in_unit_range(tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(_png_bytes((255, 0, 0)))
    img = load_image(path)
    assert img.shape == (3, 3, 4) and img.dtype == torch.float32
    assert img[:, 0, 0].tolist() == [1.0, 0.0, 0.0]


def test_load_image_converts_grey_and_alpha_to_rgb(tmp_path):
    (tmp_path / "g.png").write_bytes(_png_bytes(128, mode="L"))
    (tmp_path / "a.png").write_bytes(_png_bytes((0, 255, 0, 10), mode="RGBA"))
    grey = load_image(str(tmp_path / "g.png"))
    assert grey.shape[0] == 3 and grey[:, 0, 0].tolist() == pytest.approx([128 / 255] * 3)
    assert load_image(tmp_path / "a.png")[:, 0, 0].tolist() == [0.0, 1.0, 0.0]


def test_load_image_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(ConfigError, match=r"nope.png.*does not exist"):
        load_image(missing)
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    with pytest.raises(ConfigError, match=r"notes.png.*not an image"):
        load_image(fake)
    with pytest.raises(ConfigError, match="is a folder; give an image file"):
        load_image(tmp_path)


def test_load_image_fetches_urls(monkeypatch):
    calls = []  # BytesIO stands in for urlopen's response: a context manager with read()

    def fake_urlopen(url, timeout):
        calls.append((url, timeout))
        return io.BytesIO(_png_bytes((0, 0, 255)))

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    img = load_image("https://example.com/blue.png")
    assert img[:, 1, 1].tolist() == [0.0, 0.0, 1.0]
    assert calls[0][0] == "https://example.com/blue.png" and calls[0][1] > 0


def test_load_image_network_failure_is_a_clear_error(monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(VQClipError, match=r"could not download.*x.com.*name resolution.*path"):
        load_image("http://x.com/a.png")


def test_load_image_http_error_and_non_image_url(monkeypatch):
    def not_found(url, timeout):
        raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)

    monkeypatch.setattr(urllib.request, "urlopen", not_found)
    with pytest.raises(VQClipError, match="HTTP 404"):
        load_image("http://x.com/a.png")
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"<html>"))
    with pytest.raises(ConfigError, match=r"x.com/page.*not an image"):
        load_image("http://x.com/page")


def test_a_story_is_parsed_once_into_the_value_every_reader_takes():
    text = "a red fox:2|blurry:-1 ^ a castle at dusk|noise:-0.5:0.1"
    story = parse_story(text)
    assert parse_story(text) is story  # the same value, not parsed again
    assert story.part_texts == ("a red fox:2|blurry:-1", "a castle at dusk|noise:-0.5:0.1")
    assert story.parts[0] == tuple(parse_prompts("a red fox:2|blurry:-1")) and story.length == 2
    assert [s.value for s in story.specs(1)] == ["a red fox", "a castle at dusk"]
    assert [s.value for s in story.specs(-1)] == ["blurry", "noise"]
    assert len(story.specs()) == 4
    blank = parse_story("  ")
    assert blank.parts == () and blank.length == 1 and blank.specs() == []
    with pytest.raises(ConfigError, match="part 2 of 2 of the story"):
        parse_story("a fox ^ ")
    with pytest.raises(ConfigError, match="is empty; remove the extra"):
        parse_story("a fox||a dog")
