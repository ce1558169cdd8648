"""Probes on a smoke world: keys, chance levels, and a perfect-shape oracle scores 1."""

import dataclasses

import numpy as np
import pytest
import torch

from duet_lib import probes
from duet_lib.data.world import ensure_world, load_world
from duet_lib.models.clip import load_clip


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = ensure_world(
        "smoke", root=tmp_path_factory.mktemp("w") / "world", quiet=True
    )
    return load_world(root)


@pytest.fixture(scope="module")
def bundle():
    return load_clip("duet-tiny-conv-96", None, seed=0)


def test_attribute_probes_report_accuracy_and_chance(ws, bundle):
    photos = sorted(p for p, s in ws.photo_split.items() if s == "test")
    out = probes.attribute_probes(bundle, ws, photos)
    for name in ("category", "colour", "pattern", "background"):
        assert 0.0 <= out[name] <= 1.0
    assert out["category_chance"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least one photo"):
        probes.attribute_probes(bundle, ws, [])


def test_attribute_predictions_agree_with_the_accuracy(ws, bundle):
    photos = sorted(p for p, s in ws.photo_split.items() if s == "test")
    emb = probes.embed_images(bundle, probes.photo_arrays(ws, photos, 96))
    classes, truth, pred = probes.attribute_predictions(
        bundle, ws, photos, "colour", emb
    )
    assert truth == [ws.attributes[p]["colour"] for p in photos]
    assert set(pred) <= set(classes) and len(pred) == len(photos)
    acc = np.mean([a == b for a, b in zip(truth, pred, strict=True)])
    out = probes.attribute_probes(bundle, ws, photos, ("colour",), emb)
    assert out["colour"] == pytest.approx(acc)
    # an embedding that is exactly the class prompt of each photo's colour is read
    # back perfectly
    nouns = sorted({ws.attributes[p]["category"] for p in ws.attributes})
    text = probes.class_embeddings(
        bundle, classes, probes._prompts("colour", classes, nouns)
    )
    oracle = text[[classes.index(t) for t in truth]]
    _, _, read = probes.attribute_predictions(bundle, ws, photos, "colour", oracle)
    assert read == truth
    with pytest.raises(ValueError, match="unknown attribute 'size'"):
        probes.attribute_predictions(bundle, ws, photos, "size", emb)


def test_colour_swaps_change_only_the_colour_word():
    out = probes.colour_swaps("a red chair with a reddish back", "red", ["blue", "red"])
    assert out == [
        "a blue chair with a reddish back",
        "a red chair with a reddish back",
    ]
    assert probes.colour_swaps("a chair on grass", "red", ["blue"]) is None


def test_colour_in_context_reads_an_oracle_perfectly(ws, bundle):
    photos = sorted(p for p, s in ws.photo_split.items() if s == "test")
    colours = sorted({ws.attributes[p]["colour"] for p in ws.attributes})
    # an image embedding equal to its own caption's embedding is read back exactly
    captions = [ws.attributes[p]["captions"][0] for p in photos]
    oracle = probes.embed_texts(bundle, captions)
    out = probes.colour_in_context(bundle, ws, photos, oracle)
    named = [
        p
        for p in photos
        if probes.colour_swaps(
            ws.attributes[p]["captions"][0], ws.attributes[p]["colour"], colours
        )
    ]
    assert out["n"] == len(named) > 0 and out["colour"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least one photo"):
        probes.colour_in_context(bundle, ws, [])


def test_retrievals_return_documented_keys(ws, bundle):
    gate = probes.same_shape_retrieval(bundle, ws, "test")
    assert gate["n_gallery"] == len(
        {ws.attributes[p]["shape_id"] for p in ws.photo_ids("test")}
    )
    assert gate["chance@1"] == pytest.approx(1 / gate["n_gallery"])
    s0 = probes.sketch_to_photo_zero_shot(bundle, ws, "test")
    assert set(s0) >= {"acc@1", "acc@5", "acc@10", "n_gallery", "chance@1"}


class _ShapeOracle:
    """A fake bundle whose image embedding is a one-hot of the photo's shape, read
    from a pixel tag we plant; it checks the gate's bookkeeping, not a model."""

    image_size = 8

    def __init__(self, n):
        self.n = n
        self.model = self

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    training = False

    def preprocess(self, images):
        return torch.tensor(np.stack([im[0, 0, :1] for im in images]), dtype=torch.long)

    def encode_image(self, tags):
        return torch.nn.functional.one_hot(tags[:, 0], self.n).float()


def test_same_shape_gate_scores_one_for_a_perfect_shape_encoder(ws, monkeypatch):
    shapes = sorted({ws.attributes[p]["shape_id"] for p in ws.photo_ids("test")})
    index = {s: i for i, s in enumerate(shapes)}

    def fake_arrays(ws_, ids, size):
        out = np.zeros((len(ids), size, size, 3), np.uint8)
        for k, pid in enumerate(ids):
            out[k, 0, 0, 0] = index[ws_.attributes[pid]["shape_id"]]
        return out

    monkeypatch.setattr(probes, "photo_arrays", fake_arrays)
    gate = probes.same_shape_retrieval(_ShapeOracle(len(shapes)), ws, "test")
    assert gate["acc@1"] == 1.0


def test_caption_probe_reads_an_oracle_perfectly(ws, bundle):
    photos = sorted(p for p, s in ws.photo_split.items() if s == "test")
    classes = probes.caption_class_embeddings(bundle, ws, per_class=3)
    values, combos, emb = classes
    assert len(combos) == np.prod([len(v) for v in values.values()]) == len(emb)
    truth = [
        tuple(str(ws.attributes[p][a]) for a in probes.JOINT_ATTRIBUTES) for p in photos
    ]
    # an image embedding equal to its own combination's class embedding is read back
    # exactly, attribute by attribute
    oracle = emb[[combos.index(t) for t in truth]]
    out = probes.joint_attribute_predictions(
        bundle, ws, photos, oracle, classes=classes
    )
    for j, attribute in enumerate(probes.JOINT_ATTRIBUTES):
        names, true, pred = out[attribute]
        assert names == values[attribute]
        assert true == pred == [t[j] for t in truth]
    acc = probes.attribute_probes(
        bundle, ws, photos, ("colour", "pattern"), oracle, "captions", classes=classes
    )
    assert acc["colour"] == acc["pattern"] == 1.0
    assert acc["colour_chance"] == pytest.approx(1 / len(values["colour"]))
    # a shuffled oracle is not read perfectly: the probe looks at the embedding
    wrong = probes.attribute_probes(
        bundle, ws, photos, ("colour",), oracle.roll(1, 0), "captions", classes=classes
    )
    assert wrong["colour"] < 1.0
    with pytest.raises(ValueError, match="'short' or 'captions'"):
        probes.attribute_probes(bundle, ws, photos, prompts="long")
    with pytest.raises(ValueError, match="per_class"):
        probes.caption_class_embeddings(bundle, ws, per_class=0)


def test_caption_class_subsets_are_seeded(ws, bundle):
    a = probes.caption_class_embeddings(bundle, ws, per_class=2, seed=1)[2]
    b = probes.caption_class_embeddings(bundle, ws, per_class=2, seed=1)[2]
    c = probes.caption_class_embeddings(bundle, ws, per_class=2, seed=2)[2]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_zero_shot_phrases_write_the_reading(ws, bundle, monkeypatch):
    photos = sorted(p for p, s in ws.photo_split.items() if s == "train")[:6]

    def reading(bundle, ws, photo_ids, per_class=None, classes=None):
        # a stand-in reader: every photo is read as purple, dotted, on grass
        n = len(photo_ids)
        return {
            a: ([], ["?"] * n, [v] * n)
            for a, v in (
                ("colour", "purple"),
                ("pattern", "dotted"),
                ("background", "grass"),
            )
        }

    monkeypatch.setattr(probes, "joint_attribute_predictions", reading)
    phrases = probes.zero_shot_phrases(bundle, ws, photos, seed=3)
    assert list(phrases) == photos
    # the phrase says what was read, not the photo's true colour
    assert all("purple" in t and "dot" in t for t in phrases.values())
    # each photo's phrase depends on the seed and its id, not on the other photos
    assert probes.zero_shot_phrases(bundle, ws, photos[::-1], seed=3) == phrases
    assert probes.zero_shot_phrases(bundle, ws, photos[2:3], seed=3) == {
        photos[2]: phrases[photos[2]]
    }
    with pytest.raises(ValueError, match="at least one photo"):
        probes.zero_shot_phrases(bundle, ws, [])
    plain = dataclasses.replace(ws, attributes={})
    with pytest.raises(ValueError, match="world attributes"):
        probes.zero_shot_phrases(bundle, plain, photos)
