import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_aet.core.enhance import (
    enhance_volume, intensity_scale, load_weights, save_weights, sha256, tile_starts,
)
from napari_aet.core.errors import AETInputError
from napari_aet.core.training import TrainingConfig, generate_dataset, make_pair, train
from napari_aet.core.unet import UNet3D, UNetConfig

TINY = dict(voxels=48, n_train=8, n_val=2, chunk_size=4, size_range=(1.0, 1.3), crop=32, batch_size=2, epochs=2,
            recon_iterations=30, unet={"depth": 2, "base_width": 4, "norm": "batch", "activation": "silu"})


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    model = UNet3D(UNetConfig(depth=2, base_width=4))
    with torch.no_grad():  # give batch norm non-trivial running statistics
        model.train()
        model(torch.rand(2, 1, 32, 32, 32))
    return model.eval()


def test_unet_shapes_and_residual(tiny_model):
    x = torch.rand(1, 1, 32, 40, 24)
    assert tiny_model(x).shape == x.shape
    zero = UNet3D(UNetConfig(depth=2, base_width=4))
    torch.nn.init.zeros_(zero.head.weight)
    torch.nn.init.zeros_(zero.head.bias)
    torch.testing.assert_close(zero(x), x)  # residual: an untrained head leaves the input as it is


def test_tiles_cover_and_blend_without_seams(tiny_model):
    assert tile_starts(100, 48, 16)[0] == 0 and tile_starts(100, 48, 16)[-1] == 52
    vol = np.random.default_rng(0).random((56, 60, 52)).astype(np.float32)
    whole = enhance_volume(vol, tiny_model, tile=64, overlap=0)
    tiled = enhance_volume(vol, tiny_model, tile=32, overlap=12)
    # tiles differ from the whole only through zero padding at their edges, which the
    # blending weights down: no seams
    diff = np.abs(whole - tiled)
    assert diff.mean() < 0.02 * np.abs(whole).mean()
    assert diff.max() < 0.2 * np.abs(whole).max()
    assert whole.shape == vol.shape and whole.dtype == np.float32


def test_scale_invariance(tiny_model):
    vol = np.random.default_rng(1).random((32, 32, 32)).astype(np.float32)
    base = enhance_volume(vol, tiny_model, tile=32)
    for f in (0.1, 10.0):
        np.testing.assert_allclose(enhance_volume(vol * f, tiny_model, tile=32), base * f, rtol=1e-4, atol=1e-6 * f)
    assert intensity_scale(vol * 7) == pytest.approx(7 * intensity_scale(vol), rel=1e-5)


def test_flip_average_and_resampling(tiny_model):
    vol = np.random.default_rng(2).random((32, 32, 32)).astype(np.float32)
    assert enhance_volume(vol, tiny_model, tile=32, flip_average=True).shape == vol.shape
    out = enhance_volume(vol, tiny_model, pixel_size=0.5, training_pixel_size=0.357, tile=32)
    assert out.shape == vol.shape
    with pytest.raises(AETInputError, match="too far"):
        enhance_volume(vol, tiny_model, pixel_size=2.0, training_pixel_size=0.357)


def test_weights_round_trip_checksum_and_refusals(tmp_path, tiny_model):
    w = tmp_path / "w.pt"
    digest = save_weights(w, tiny_model, {"training_pixel_size": 0.357})
    (tmp_path / "w.json").write_text(json.dumps({"sha256": digest}))
    model, meta = load_weights(w)
    assert meta["training_pixel_size"] == 0.357 and meta["sha256"] == digest  # reports name the weights
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, tiny_model.state_dict()[k])
    # corrupt: checksum mismatch
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(data))
    (tmp_path / "bad.json").write_text(json.dumps({"sha256": digest}))
    with pytest.raises(AETInputError, match="checksum"):
        load_weights(bad)
    # another architecture
    payload = torch.load(w, weights_only=True)
    payload["config"]["base_width"] = 8
    other = tmp_path / "other.pt"
    torch.save(payload, other)
    with pytest.raises(AETInputError, match="no checksum"):
        load_weights(other)  # no checksum beside it: refused unless trusted
    with pytest.raises(AETInputError, match="architecture"):
        load_weights(other, trust=True)
    # not a plain state dict (a pickled object) is refused
    from fractions import Fraction

    evil = tmp_path / "evil.pt"
    torch.save({"format": "napari-aet-unet-1", "obj": Fraction(1, 3)}, evil)
    with pytest.raises(AETInputError, match="not a plain state dict"):
        load_weights(evil, trust=True)
    assert sha256(w) == digest


def test_pairs_are_normalized_like_inference():
    cfg = TrainingConfig(**TINY)
    x, y = make_pair(cfg, 3)
    assert x.shape == y.shape == (48, 48, 48)
    assert np.percentile(x, 99.9) == pytest.approx(1.0, rel=1e-4)
    x2, _ = make_pair(cfg, 3)
    np.testing.assert_array_equal(x, x2)  # seeded


def test_generate_resume_and_train_with_checkpoint_resume(tmp_path):
    cfg = TrainingConfig(**TINY)
    s1 = generate_dataset(cfg, tmp_path / "data")
    assert s1["new_chunks"] == 3
    first = (tmp_path / "data" / "train_00000.npz").read_bytes()
    s2 = generate_dataset(cfg, tmp_path / "data")
    assert s2["new_chunks"] == 0 and (tmp_path / "data" / "train_00000.npz").read_bytes() == first
    res = train(cfg, tmp_path / "data", tmp_path / "run", device="cpu")
    assert res["epochs_done"] == 2 and (tmp_path / "run" / "weights.pt").exists()
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    epochs = [e for e in log if not e.get("after_bn_recalibration")]
    assert [e["epoch"] for e in epochs] == [1, 2] and all(np.isfinite(e["val_loss"]) for e in log)
    assert log[-1]["after_bn_recalibration"] and "bn_recalibration" in res
    bn = res["bn_recalibration"]  # the better-validating statistics are the ones saved
    best = min(bn["before"]["val_error_output"], bn["after"]["val_error_output"])
    assert log[-1]["val_error_output"] == best
    assert bn["kept"] == ("recalibrated" if bn["after"]["val_error_output"] <= bn["before"]["val_error_output"] else "training")
    cfg.epochs = 3
    res = train(cfg, tmp_path / "data", tmp_path / "run", device="cpu")  # resumes at epoch 2
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log if not e.get("after_bn_recalibration")] == [1, 2, 3]
    model, meta = load_weights(tmp_path / "run" / "weights.pt")
    assert meta["training_pixel_size"] == 0.357
    # fine-tuning from those weights with no epochs only recomputes the batch-norm statistics
    cfg.epochs, cfg.bn_recalibration_batches = 0, 3
    res = train(cfg, tmp_path / "data", tmp_path / "recal", device="cpu", init_weights=tmp_path / "run" / "weights.pt")
    recal, _ = load_weights(tmp_path / "recal" / "weights.pt")
    a, b = dict(model.named_parameters()), dict(recal.named_parameters())
    assert all(torch.equal(a[k], b[k]) for k in a)  # weights untouched
    ra, rb = dict(model.named_buffers()), dict(recal.named_buffers())
    changed = any(not torch.allclose(ra[k], rb[k]) for k in ra if k.endswith("running_var"))
    assert changed == (res["bn_recalibration"]["kept"] == "recalibrated")  # recomputed only when they validate better
    assert res["bn_recalibration"]["after"]["val_error_output"] < 10  # finite and sane
    other = dict(TINY, unet={"depth": 2, "base_width": 6, "norm": "batch", "activation": "silu"}, epochs=0)
    with pytest.raises(AETInputError, match="architecture"):
        train(TrainingConfig(**other), tmp_path / "data", tmp_path / "x", device="cpu",
              init_weights=tmp_path / "run" / "weights.pt")


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path):
    # long enough for the validation loss to fall (train saves no weights otherwise)
    cfg = TrainingConfig(**dict(TINY, epochs=6))
    generate_dataset(cfg, tmp_path / "data")
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
         "-m", "napari_aet.cli", "train", str(tmp_path / "cfg.json"), "--data", str(tmp_path / "data"),
         "-o", str(tmp_path / "run"), "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    prov = json.loads((tmp_path / "run" / "weights.json").read_text())
    assert prov["world_size"] == 2 and prov["epochs_done"] == 6
    load_weights(tmp_path / "run" / "weights.pt")


def test_training_on_a_mixture_of_data_folders(tmp_path):
    cfg = TrainingConfig(**dict(TINY, epochs=1, bn_recalibration_batches=0))
    generate_dataset(cfg, tmp_path / "a")
    generate_dataset(TrainingConfig(**dict(TINY, seed=5)), tmp_path / "b")
    res = train(cfg, [tmp_path / "a", tmp_path / "b"], tmp_path / "run", device="cpu")
    assert res["n_train_pairs"] == 2 * cfg.n_train and res["n_val_pairs"] == 2 * cfg.n_val
    assert res["data"] == [str(tmp_path / "a"), str(tmp_path / "b")]
    (tmp_path / "small").mkdir()
    for split in ("train", "val"):
        np.savez(tmp_path / "small" / f"{split}_00000.npz", inputs=np.zeros((2, 40, 40, 40), np.float32),
                 targets=np.zeros((2, 40, 40, 40), np.float32))
    with pytest.raises(AETInputError, match="differ in size"):
        train(cfg, [tmp_path / "a", tmp_path / "small"], tmp_path / "run2", device="cpu")
    with pytest.raises(AETInputError, match="no train chunks"):
        train(cfg, [tmp_path / "a", tmp_path / "empty"], tmp_path / "run3", device="cpu")


def test_auto_tile_is_the_whole_volume_when_memory_allows_and_shrinks_when_not(tiny_model):
    from napari_aet.core.enhance import auto_tile

    m = tiny_model.multiple
    assert auto_tile((100, 90, 80), tiny_model) == -(-100 // m) * m  # one tile
    small = auto_tile((400, 400, 400), tiny_model, share=1e-6)  # almost no memory: the floor
    assert small == 64 and small % m == 0
    vol = np.random.default_rng(0).random((40, 40, 40)).astype(np.float32)
    np.testing.assert_allclose(enhance_volume(vol, tiny_model), enhance_volume(vol, tiny_model, tile=auto_tile(vol.shape, tiny_model)))
