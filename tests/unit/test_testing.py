"""The offline model helpers: BPE vocabulary, tiny CLIP builder, shapes world, shapes-clip."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, CLIPModel

from qdrant_xai.demo.world import COLORS, SHAPES, WORLD_WORDS, generate_scenes, write_scene_folder
from qdrant_xai.encoding.checkpoints import checkpoint_path
from qdrant_xai.testing import (
    BOS_TOKEN,
    EOS_TOKEN,
    build_clip_tokenizer,
    build_tiny_clip,
    bytes_to_unicode,
    clip_bpe_vocabulary,
)

SHAPES_CLIP = checkpoint_path("shapes")  # the bundled model, loaded here by transformers itself


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny") / "clip", seed=3)


def _embed(path: Path, texts: list[str], images: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised text [T, D] and image [I, D] embeddings of a saved checkpoint."""
    model = CLIPModel.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    inputs = processor(text=texts, images=images, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
    return out.text_embeds, out.image_embeds


# --- (a) the BPE vocabulary -------------------------------------------------------------


def test_bytes_to_unicode_is_gpt2_table() -> None:
    table = bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert table[ord("a")] == "a" and table[ord("!")] == "!"
    assert table[ord(" ")] == "Ġ"  # the space byte, as in GPT-2 and CLIP vocabularies


def test_vocabulary_layout_matches_clip() -> None:
    vocab, merges = clip_bpe_vocabulary(["red", "green"])
    chars = list(bytes_to_unicode().values())
    assert [vocab[c] for c in chars] == list(range(256))
    assert [vocab[c + "</w>"] for c in chars] == list(range(256, 512))
    assert vocab[BOS_TOKEN] == len(vocab) - 2 and vocab[EOS_TOKEN] == len(vocab) - 1
    assert sorted(vocab.values()) == list(range(len(vocab)))
    assert all(len(merge.split(" ")) == 2 for merge in merges)
    assert "red</w>" in vocab and "green</w>" in vocab


def test_each_world_word_is_one_token() -> None:
    words = [*WORLD_WORDS, "greenery", "reddish", "Überall"]
    tokenizer = build_clip_tokenizer(words)
    for word in words:
        tokens = tokenizer.tokenize(word)
        assert len(tokens) == 1, (word, tokens)
        assert tokenizer.decode(tokenizer.convert_tokens_to_ids(tokens)) == word.lower()
    assert tokenizer.tokenize("circle") == ["circle</w>"]


def test_other_text_tokenizes_with_offsets_into_the_original() -> None:
    tokenizer = build_clip_tokenizer()
    text = "A  RED circle, next to 3 héllo-wörld ☃ squares!"
    encoding = tokenizer(text, return_offsets_mapping=True)
    ids = encoding["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.unk_token_id not in ids[1:-1]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    for token, (start, end) in zip(tokens[1:-1], encoding["offset_mapping"][1:-1], strict=True):
        assert 0 <= start < end <= len(text)
        if token.endswith("</w>") and len(token) > 5:  # whole words of the vocabulary
            assert text[start:end].lower() == token.removesuffix("</w>")
    spans = {text[s:e] for s, e in encoding["offset_mapping"][1:-1]}
    assert {"A", "RED", "circle", ","} <= spans
    assert tokenizer.decode(ids, skip_special_tokens=True).startswith("a red circle ,")


def test_vocabulary_rejects_non_words() -> None:
    with pytest.raises(ValueError, match="letters"):
        clip_bpe_vocabulary(["red circle"])


# --- (b) build_tiny_clip ------------------------------------------------------------------


def test_tiny_clip_round_trips_with_identical_embeddings(tiny_clip: Path, tmp_path: Path) -> None:
    scenes = list(generate_scenes(3, seed=5))
    texts, images = [s.caption for s in scenes], [s.image for s in scenes]
    _, info = CLIPModel.from_pretrained(tiny_clip, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    text_a, image_a = _embed(tiny_clip, texts, images)
    text_b, image_b = _embed(build_tiny_clip(tmp_path / "again", seed=3), texts, images)
    torch.testing.assert_close(text_a, text_b, rtol=0, atol=0)
    torch.testing.assert_close(image_a, image_b, rtol=0, atol=0)
    text_c, _ = _embed(build_tiny_clip(tmp_path / "other", seed=4), texts, images)
    assert not torch.allclose(text_a, text_c)


def test_tiny_clip_pools_at_the_end_of_text_token(tiny_clip: Path) -> None:
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    tokenizer = AutoProcessor.from_pretrained(tiny_clip).tokenizer
    assert model.config.text_config.eos_token_id == tokenizer.eos_token_id
    assert model.config.text_config.bos_token_id == tokenizer.bos_token_id
    assert model.config.text_config.pad_token_id == tokenizer.pad_token_id
    assert model.config.text_config.vocab_size == len(tokenizer)
    batch = tokenizer(["a red circle", "a blue square and a green cross"], padding=True)
    inputs = {key: torch.tensor(value) for key, value in batch.items()}
    with torch.no_grad():
        out = model.text_model(**inputs)
    eos = [ids.index(tokenizer.eos_token_id) for ids in batch["input_ids"]]
    assert eos[0] < len(batch["input_ids"][0]) - 1  # the short text is padded after its eos
    expected = out.last_hidden_state[torch.arange(2), torch.tensor(eos)]
    torch.testing.assert_close(out.pooler_output, model.text_model.final_layer_norm(expected))


def test_tiny_clip_grid_and_validation(tmp_path: Path) -> None:
    path = build_tiny_clip(tmp_path / "odd", image_size=40, patch_size=8, hidden_size=16)
    model = CLIPModel.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    pixels = processor(images=[next(generate_scenes(1)).image], return_tensors="pt")
    assert pixels["pixel_values"].shape == (1, 3, 40, 40)
    with torch.no_grad():
        hidden = model.vision_model(**pixels).last_hidden_state
    assert hidden.shape == (1, 1 + 5 * 5, 16)
    with pytest.raises(ValueError, match="must divide"):
        build_tiny_clip(tmp_path / "bad", image_size=36, patch_size=8)


# --- (c) the shapes world -----------------------------------------------------------------


def test_generate_scenes_is_deterministic() -> None:
    first = list(generate_scenes(6, seed=11, size=64))
    second = list(generate_scenes(6, seed=11, size=64))
    prefix = list(generate_scenes(3, seed=11, size=64))
    for a, b in zip(first, second, strict=True):
        assert a == b  # caption, colours, shapes, boxes
        assert a.image.tobytes() == b.image.tobytes()
        for obj_a, obj_b in zip(a.objects, b.objects, strict=True):
            np.testing.assert_array_equal(obj_a.mask, obj_b.mask)
    assert [s.caption for s in prefix] == [s.caption for s in first[:3]]
    other = list(generate_scenes(6, seed=12, size=64))
    assert [s.image.tobytes() for s in other] != [s.image.tobytes() for s in first]


def test_scene_objects_masks_boxes_and_captions() -> None:
    for scene in generate_scenes(40, seed=2, size=96):
        assert scene.image.mode == "RGB" and scene.image.size == (96, 96)
        assert 1 <= len(scene.objects) <= 3
        assert len({(o.color, o.shape) for o in scene.objects}) == len(scene.objects)
        occupied = np.zeros((96, 96), dtype=int)
        for obj in scene.objects:
            assert obj.color in COLORS and obj.shape in SHAPES
            assert obj.phrase in scene.caption
            assert obj.mask.shape == (96, 96) and obj.mask.dtype == bool
            ys, xs = np.nonzero(obj.mask)
            assert obj.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            occupied += obj.mask
        assert occupied.max() == 1  # objects never overlap


def test_write_scene_folder(tmp_path: Path) -> None:
    csv_path = write_scene_folder(tmp_path / "scenes", 3, seed=4, size=48)
    with csv_path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["image"] for row in rows] == ["scene_0000.png", "scene_0001.png", "scene_0002.png"]
    captions = [s.caption for s in generate_scenes(3, seed=4, size=48)]
    assert [row["caption"] for row in rows] == captions
    assert all((csv_path.parent / row["image"]).is_file() for row in rows)


# --- (d) the bundled shapes-clip checkpoint -----------------------------------------------


def test_shapes_clip_ranks_the_right_caption_first() -> None:
    config = CLIPModel.config_class.from_pretrained(SHAPES_CLIP)
    processor = AutoProcessor.from_pretrained(SHAPES_CLIP)
    assert config.text_config.eos_token_id == processor.tokenizer.eos_token_id
    # The training stream uses seed 0; these scenes were never seen. A fixed, deterministic
    # sample: on 8-way image->text the model is right about 9 times in 10, here always.
    scenes = list(generate_scenes(8, seed=987_654))
    texts, images = _embed(SHAPES_CLIP, [s.caption for s in scenes], [s.image for s in scenes])
    scores = images @ texts.T  # [image, caption]
    assert scores.argmax(dim=1).tolist() == list(range(len(scenes)))
    # text->image: the top image holds every object the caption names
    for caption, top in zip(scenes, scores.argmax(dim=0).tolist(), strict=True):
        named = {(o.color, o.shape) for o in caption.objects}
        assert named <= {(o.color, o.shape) for o in scenes[top].objects}, caption.caption
