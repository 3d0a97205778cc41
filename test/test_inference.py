"""Runtime path: preprocessing geometry, decoding, checkpoints and the Predictor (tiny student, CPU)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from tinybev_ros import inference
from tinybev_ros.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint, write_tensors
from tinybev_ros.cli import main as tinybev
from tinybev_ros.geometry import CAMERA_NAMES, Rig
from tinybev_ros.inference import Predictor
from tinybev_ros.model import DecodeConfig, build_student, load_model_config
from tinybev_ros.model.box_code import AXIS_DIRECTION, SIN_COS
from tinybev_ros.model.decode import decode
from tinybev_ros.model.preprocess import ResizeCrop, preprocess_image
from tinybev_ros.precision import autocast_dtype

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


@pytest.fixture(scope="module")
def tiny():
    return load_model_config(CONFIG_DIR / "model_tiny.yaml")


@pytest.fixture(scope="module")
def rig_inputs():
    rig = Rig.load()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (900, 1600, 3), dtype=np.uint8) for _ in CAMERA_NAMES]
    ks = [rig.cameras[n].intrinsic for n in CAMERA_NAMES]
    poses = [rig.cameras[n].sensor_to_ego for n in CAMERA_NAMES]
    return images, ks, poses


def test_preprocess_moves_a_projected_point_where_the_new_k_says(tiny):
    """Draw a dot where a 3D point projects with K; after resize+crop the dot must be where K' projects it."""
    k = Rig.load().cameras["CAM_FRONT"].intrinsic
    point = np.array([3.1, 1.7, 14.0])  # camera frame
    u, v = (k @ point)[:2] / point[2]
    image = np.zeros((900, 1600, 3), dtype=np.uint8)
    cv2.circle(image, (int(round(u * 16)), int(round(v * 16))), 16 * 12, (255, 255, 255), -1, cv2.LINE_AA, 4)
    tensor, k_new = preprocess_image(image, k, tiny)
    assert tensor.shape == (3, tiny.image_height, tiny.image_width) and tensor.dtype == np.float32
    gray = tensor[0] - tensor[0].min()
    rows, cols = np.indices(gray.shape)
    centroid = np.array([(cols * gray).sum(), (rows * gray).sum()]) / gray.sum()
    expected = (k_new @ point)[:2] / point[2]
    np.testing.assert_allclose(centroid, expected, atol=0.15)
    # ImageNet normalisation: white is (1 - mean) / std per channel.
    np.testing.assert_allclose(tensor[:, int(expected[1]), int(expected[0])], [2.2489, 2.4286, 2.64], atol=1e-3)


def test_resize_crop_zero_fills_outside_the_source():
    crop = ResizeCrop.fit_width((900, 1600), (256, 704), scale_jitter=0.9, crop_shift=(-20, 0))
    out = crop.image(np.full((900, 1600, 3), 200, dtype=np.uint8))
    assert out.shape == (256, 704, 3)
    assert (out[:, :10] == 0).all() and (out[:, 100] == 200).all()


YAW = 2.6  # a heading decoded from the box code at the peak


def handmade_outputs(config, peak_rc=(40, 55), label=3):
    """Outputs with one clear peak of class `label`, a weaker neighbour (suppressed) and a sub-threshold peak."""
    hd, wd = config.grid.shape[0] // config.det_stride, config.grid.shape[1] // config.det_stride
    k, t = config.motion_modes, config.forecast_steps
    heat = torch.full((1, 10, hd, wd), -10.0)
    r, c = peak_rc
    heat[0, label, r, c] = 5.0
    heat[0, label, r, c + 1] = 4.0  # neighbour of the peak: not a local maximum
    heat[0, 0, 10, 10] = -3.0  # a peak, but sigmoid(-3) = 0.047 < threshold
    box = torch.zeros(1, config.box_code_size, hd, wd)
    heading = ([np.sin(2 * YAW), np.cos(2 * YAW), 1.5, -0.5, -3.0] if config.heading_code == AXIS_DIRECTION
               else [np.sin(YAW), np.cos(YAW), 1.5, -0.5])  # YAW = the axis angle + pi: direction logit < 0
    box[0, :, r, c] = torch.tensor([0.25, 0.75, 1.0, np.log(2.0), np.log(4.0), np.log(1.5), *heading])
    motion = torch.zeros(1, k, t, 2, hd, wd)
    steps = torch.arange(1, t + 1, dtype=torch.float32)
    for mode in range(k):
        motion[0, mode, :, 0, r, c] = steps * (mode + 1)
        motion[0, mode, :, 1, r, c] = -steps
    logits = torch.zeros(1, k, hd, wd)
    logits[0, 2, r, c] = 2.0
    h, w = config.grid.shape
    return {"heatmap": heat, "box": box, "motion": motion.reshape(1, k * t * 2, hd, wd), "motion_logits": logits,
            "map": torch.zeros(1, 4, h, w), "occupancy": torch.full((1, 5, h, w), 2.0),
            "plan": torch.arange(12, dtype=torch.float32).view(1, 6, 2)}


@pytest.mark.parametrize("heading_code", [AXIS_DIRECTION, SIN_COS])
def test_decode_reads_boxes_motion_and_probabilities_at_peaks(tiny, heading_code):
    """Also for a model from before the axis/direction box code (the released student until it is retrained)."""
    tiny = dataclasses.replace(tiny, heading_code=heading_code)
    outputs = handmade_outputs(tiny)
    (pred,) = decode(outputs, tiny, [42], [1])
    assert len(pred) == 1 and pred.stamp_ns == 42 and pred.command == 1 and pred.grid == tiny.grid
    det = tiny.det_grid
    center = [det.x_min + 40.25 * det.resolution, det.y_min + 55.75 * det.resolution, 1.0]
    np.testing.assert_allclose(pred.centers[0], center, atol=1e-5)
    np.testing.assert_allclose(pred.sizes_wlh[0], [2.0, 4.0, 1.5], rtol=1e-5)
    np.testing.assert_allclose(pred.yaws[0], YAW, atol=1e-6)
    np.testing.assert_allclose(pred.velocities[0], [1.5, -0.5])
    assert pred.labels[0] == 3 and pred.track_ids[0] == -1
    np.testing.assert_allclose(pred.scores[0], 1 / (1 + np.exp(-5.0)), rtol=1e-6)
    assert pred.forecasts.shape == (1, tiny.motion_modes, 12, 2)
    np.testing.assert_allclose(pred.forecasts[0, 1, 3], [center[0] + 4 * 2, center[1] - 4], atol=1e-4)
    probs = pred.forecast_probs[0]
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-6)
    assert probs.argmax() == 2 and np.isclose(probs[2] / probs[0], np.exp(2.0), rtol=1e-5)
    np.testing.assert_allclose(pred.map_probs, 0.5)
    np.testing.assert_allclose(pred.occupancy, 1 / (1 + np.exp(-2.0)), rtol=1e-6)
    np.testing.assert_allclose(pred.ego_plan, np.arange(12).reshape(6, 2))
    # With no threshold the sub-threshold peak appears too, the suppressed neighbour never does.
    low = dataclasses.replace(tiny, decode=DecodeConfig(score_threshold=0.01, max_detections=5))
    (pred_low,) = decode(outputs, low, [42], [1])
    assert len(pred_low) == 2 and sorted(pred_low.labels.tolist()) == [0, 3]


def test_predictor_runs_tiny_on_cpu_and_caches_the_splat_index(tiny, rig_inputs):
    images, ks, poses = rig_inputs
    predictor = Predictor.untrained(dataclasses.replace(tiny, decode=DecodeConfig(score_threshold=0.0,
                                                                                   max_detections=7)))
    assert predictor.device.type in ("cpu", "cuda")
    first = predictor.predict(images, ks, poses, command=2, stamp_ns=1_000)
    second = predictor.predict(images, ks, [p.matrix for p in poses], command=2, stamp_ns=2_000)
    assert predictor.splat_computations == 1
    h, w = tiny.grid.shape
    assert len(first) == 7 and first.forecasts.shape == (7, tiny.motion_modes, 12, 2)
    assert first.map_probs.shape == (4, h, w) and first.occupancy.shape == (5, h, w)
    assert first.ego_plan.shape == (6, 2) and second.stamp_ns == 2_000 and first.command == 2
    np.testing.assert_allclose(first.forecast_probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(first.scores, second.scores, rtol=1e-5)
    assert set(predictor.last_timing_ms) == {"preprocess", "model", "decode"}
    moved = [p.matrix.copy() for p in poses]
    moved[1][0, 3] += 0.5
    predictor.predict(images, ks, moved, command=0, stamp_ns=3_000)
    assert predictor.splat_computations == 2


def test_warm_up_prepares_the_default_rig(tiny, rig_inputs):
    predictor = Predictor.untrained(tiny)
    assert predictor.warm_up() > 0 and predictor.splat_computations == 1
    images, ks, poses = rig_inputs
    predictor.predict(images, ks, poses, command=2, stamp_ns=0)
    assert predictor.splat_computations == 1  # the real frames on this rig reuse the warm-up's splat index


def test_predictor_rejects_bad_input_clearly(tiny, rig_inputs):
    images, ks, poses = rig_inputs
    predictor = Predictor.untrained(tiny)
    with pytest.raises(ValueError, match="expected 6 images"):
        predictor.predict(images[:5], ks[:5], poses, 2, 0)
    gray = [*images[:2], images[2][..., 0], *images[3:]]
    with pytest.raises(ValueError, match="CAM_FRONT_RIGHT.*HxWx3 uint8"):
        predictor.predict(gray, ks, poses, 2, 0)
    with pytest.raises(ValueError, match="command"):
        predictor.predict(images, ks, poses, 7, 0)


def test_checkpoint_round_trip_and_errors(tmp_path, tiny):
    torch.manual_seed(3)
    model = build_student(tiny).eval()
    path = save_checkpoint(tmp_path / "student.safetensors", model, tiny, {"step": 12, "note": "round trip"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.safetensors"]  # no temp file left behind
    tensors, metadata = read_checkpoint(path)
    assert metadata["kind"] == "student" and metadata["step"] == "12" and metadata["note"] == "round trip"
    assert metadata["config"]["name"] == "tiny"
    loaded, config = load_checkpoint(path)
    assert config == tiny and not loaded.training
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name

    save_checkpoint(tmp_path / "teacher.safetensors", model, tiny, kind="teacher")
    with pytest.raises(ValueError, match="teacher.safetensors holds a teacher"):
        load_checkpoint(tmp_path / "teacher.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00not a safetensors file")
    with pytest.raises(ValueError, match="garbage.safetensors"):
        load_checkpoint(tmp_path / "garbage.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"), metadata={"format": "other"})
    with pytest.raises(ValueError, match="foreign.safetensors: format"):
        load_checkpoint(tmp_path / "foreign.safetensors")
    broken = dict(tensors)
    broken.pop("heads.box.1.bias")
    save_file(broken, str(tmp_path / "partial.safetensors"),
              metadata={"format": metadata["format"], "kind": "student", "config": "name: tiny\n" + _yaml_rest(tiny)})
    with pytest.raises(ValueError, match="partial.safetensors.*heads.box.1.bias"):
        load_checkpoint(tmp_path / "partial.safetensors")
    save_file(tensors, str(tmp_path / "bad_yaml.safetensors"),
              metadata={"format": metadata["format"], "kind": "student", "config": "name: [unclosed"})
    with pytest.raises(ValueError, match="bad_yaml.safetensors: its config metadata is not valid YAML"):
        load_checkpoint(tmp_path / "bad_yaml.safetensors")
    save_file(tensors, str(tmp_path / "listed.safetensors"),
              metadata={"format": metadata["format"], "kind": "student", "config": "- name\n- tiny\n"})
    with pytest.raises(ValueError, match="listed.safetensors: its config metadata is a list, not a mapping"):
        load_checkpoint(tmp_path / "listed.safetensors")
    with pytest.raises(ValueError, match=f"checkpoint {tmp_path} is a directory"):
        load_checkpoint(tmp_path)


def test_release_halves_the_file_and_keeps_the_predictions(tmp_path, tiny, rig_inputs, capsys):
    torch.manual_seed(4)
    model = build_student(tiny).eval()
    trained = save_checkpoint(tmp_path / "model.safetensors", model, tiny, {"step": 9})
    assert tinybev(["release", str(trained), "--out", str(tmp_path / "ship.safetensors")]) == 0
    shipped = tmp_path / "ship.safetensors"
    assert shipped.stat().st_size < 0.55 * trained.stat().st_size
    tensors, metadata = read_checkpoint(shipped)
    assert metadata["precision"] == "float16" and metadata["step"] == "9" and metadata["config"]["name"] == "tiny"
    assert metadata["released_from"].startswith("model.safetensors sha256:")
    assert tensors["heads.box.1.bias"].dtype == torch.float16
    assert tensors["camera.backbone.bn1.num_batches_tracked"].dtype == torch.int64
    images, ks, poses = rig_inputs
    full = Predictor.from_checkpoint(trained, device="cpu").predict(images, ks, poses, command=2, stamp_ns=0)
    half = Predictor.from_checkpoint(shipped, device="cpu").predict(images, ks, poses, command=2, stamp_ns=0)
    np.testing.assert_allclose(half.map_probs, full.map_probs, atol=0.01)
    np.testing.assert_allclose(half.ego_plan, full.ego_plan, atol=0.05)

    save_checkpoint(tmp_path / "teacher.safetensors", model, tiny, kind="teacher")
    assert tinybev(["release", str(tmp_path / "teacher.safetensors"), "--out", str(tmp_path / "t.safetensors")]) == 2
    assert "only students are shipped" in capsys.readouterr().err
    big = build_student(tiny)
    with torch.no_grad():
        big.heads.box[1].bias[0] = 1e6
    save_checkpoint(tmp_path / "big.safetensors", big, tiny)
    assert tinybev(["release", str(tmp_path / "big.safetensors"), "--out", str(tmp_path / "b.safetensors")]) == 2
    assert "heads.box.1.bias has values float16 cannot represent" in capsys.readouterr().err
    assert not (tmp_path / "b.safetensors").exists()
    # A source whose weights do not build its model is refused before the target is replaced.
    tensors, metadata = read_checkpoint(trained)
    del tensors["heads.box.1.bias"]
    metadata["config"] = yaml.safe_dump(metadata["config"])
    write_tensors(tmp_path / "broken.safetensors", tensors, metadata)
    before = shipped.read_bytes()
    assert tinybev(["release", str(tmp_path / "broken.safetensors"), "--out", str(shipped)]) == 2
    assert "heads.box.1.bias" in capsys.readouterr().err
    assert shipped.read_bytes() == before and not list(tmp_path.glob(".ship.safetensors.*"))


def _yaml_rest(config) -> str:
    text = (CONFIG_DIR / "model_tiny.yaml").read_text()
    return "".join(line + "\n" for line in text.splitlines() if line and not line.startswith(("#", "name:")))


def test_params_command_prints_parts_and_total(capsys):
    assert tinybev(["params", "--config", str(CONFIG_DIR / "model_tiny.yaml")]) == 0
    out = capsys.readouterr().out
    assert "image backbone (ResNet-18)" in out and "head: planner" in out and "tiny" in out
    total = sum(p.numel() for p in build_student(load_model_config(CONFIG_DIR / "model_tiny.yaml")).parameters())
    assert f"({total:,} parameters)" in out


def test_the_cuda_precision_runs_the_whole_model_and_agrees_with_fp32(tiny, rig_inputs, monkeypatch):
    """On CUDA the precision rule answers float16 (auto or fp16). This CPU cannot be a CUDA device, so the rule is
    made to answer what it answers there, and the Predictor's own handling of it runs for real: every frame used to
    fail with a dtype error (weights cast to fp16 fed the float32 BEV pooling's output)."""
    images, ks, poses = rig_inputs
    config = dataclasses.replace(tiny, decode=DecodeConfig(score_threshold=0.0, max_detections=5))
    reference = Predictor.untrained(config, device="cpu")
    reference.autocast = None  # plain float32, also on a CPU with bf16
    expected = reference.predict(images, ks, poses, command=2, stamp_ns=0)
    assert autocast_dtype("fp16", torch.device("cuda")) == torch.float16
    monkeypatch.setattr(inference, "autocast_dtype", lambda precision, device: torch.float16)
    fp16 = Predictor(reference.model, config, "cpu", precision="fp16")
    assert fp16.precision == "fp16" and all(p.dtype == torch.float32 for p in fp16.model.parameters())
    got = fp16.predict(images, ks, poses, command=2, stamp_ns=0)
    assert np.isfinite(got.map_probs).all() and np.isfinite(got.ego_plan).all()
    np.testing.assert_allclose(got.map_probs, expected.map_probs, atol=2e-2)
    np.testing.assert_allclose(got.occupancy, expected.occupancy, atol=2e-2)
    np.testing.assert_allclose(np.sort(got.scores), np.sort(expected.scores), atol=2e-2)
