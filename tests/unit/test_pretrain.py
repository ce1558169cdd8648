"""Tiny-CLIP pretraining: resume equals a straight run, cache reuse, bad configs."""

import pytest
import torch

from duet_lib.models.pretrain import (
    PretrainConfig,
    book_clip,
    pretrain_clip,
    soft_caption_targets,
)


def _cfg(**kw):
    base = dict(
        steps=4, batch_size=8, corpus_size=16, warmup_steps=1, checkpoint_every=2
    )
    return PretrainConfig.for_profile("smoke", **{**base, **kw})


def _state(bundle):
    return {k: v.clone() for k, v in bundle.model.state_dict().items()}


def test_resume_reaches_the_same_weights_as_a_straight_run(tmp_path, monkeypatch):
    cfg = _cfg()
    monkeypatch.setenv("DUET_CACHE_DIR", str(tmp_path / "a"))
    part = pretrain_clip(cfg, quiet=True, stop_after=2)
    assert part.checkpoint.name == "last.pt" and len(part.history) == 2
    resumed = pretrain_clip(cfg, quiet=True)
    assert resumed.resumed_from == 2 and resumed.checkpoint.name == "model.pt"

    monkeypatch.setenv("DUET_CACHE_DIR", str(tmp_path / "b"))
    straight = pretrain_clip(cfg, quiet=True)
    a, b = _state(resumed.bundle), _state(straight.bundle)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]


def test_finished_model_is_reused_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DUET_CACHE_DIR", str(tmp_path))
    cfg = _cfg(steps=2)
    first = pretrain_clip(cfg, quiet=True)
    again = pretrain_clip(cfg, quiet=True)
    assert first.trained_now and not again.trained_now
    torch.testing.assert_close(_state(first.bundle), _state(again.bundle))
    other = book_clip("smoke", steps=2, batch_size=8, corpus_size=16, warmup_steps=1)
    assert other is not None


def test_config_key_changes_with_any_field():
    assert _cfg().key() != _cfg(image_image_weight=0.5).key()
    assert _cfg().key() == _cfg().key()


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"steps": 0}, "steps"),
        ({"line_drawing_fraction": 1.5}, "line_drawing_fraction"),
        ({"batch_size": 64, "corpus_size": 16}, "batch_size"),
        ({"lr": 0.0}, "lr"),
    ],
)
def test_bad_config_is_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        _cfg(**kw)


def test_unknown_profile_preset():
    with pytest.raises(ValueError, match="smoke, teach"):
        PretrainConfig.for_profile("paper")


def test_identical_captions_share_targets():
    ids = torch.tensor([[1, 2], [1, 2], [3, 4]])
    t = soft_caption_targets(ids)
    torch.testing.assert_close(t[0], torch.tensor([0.5, 0.5, 0.0]))
    torch.testing.assert_close(t[2], torch.tensor([0.0, 0.0, 1.0]))
