"""Student vs teacher speed side by side, plus the Predictor end to end and the ONNX Runtime student.

Usage:
  python benchmarks/model_speed.py                                   # tiny student / tiny teacher
  python benchmarks/model_speed.py --student config/model_base.yaml --teacher config/teacher_base.yaml
  python benchmarks/model_speed.py --threads 2 --onnx                # the CPU demo setting, plus onnxruntime

Random weights (speed does not depend on them), the real nuScenes rig, batch 1. The student runs with its
cached splat index (as the Predictor does); the teacher recomputes its index and pillars every call, with a
LiDAR sweep of --lidar-points points. On a CUDA device the Predictor runs fp16 (its default there).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from tinybev_ros.device import resolve_device
from tinybev_ros.geometry import CAMERA_NAMES, Rig
from tinybev_ros.inference import Predictor
from tinybev_ros.model import build_student, load_model_config
from tinybev_ros.model.preprocess import ResizeCrop
from training.metrics.speed import count_parameters, measure_latency
from training.teachers import build_teacher, load_teacher_config

ROOT = Path(__file__).resolve().parents[1]


def rig_inputs(image_hw: tuple[int, int]) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], np.ndarray,
                                                   np.ndarray]:
    """Raw images/K/poses (Predictor input) and the (6, 3, 3) K, (6, 4, 4) poses after preprocessing."""
    rig = Rig.load()
    rng = np.random.default_rng(0)
    images, ks, poses, model_ks = [], [], [], []
    for name in CAMERA_NAMES:
        cam = rig.cameras[name]
        images.append(rng.integers(0, 256, (cam.height, cam.width, 3), dtype=np.uint8))
        ks.append(cam.intrinsic)
        poses.append(cam.sensor_to_ego.matrix)
        model_ks.append(ResizeCrop.fit_width((cam.height, cam.width), image_hw).intrinsics(cam.intrinsic))
    return images, ks, poses, np.array(model_ks, dtype=np.float32), np.array(poses, dtype=np.float32)


def line(name: str, params: int | None, latency: dict[str, float]) -> str:
    size = f"{params / 1e6:7.2f} M" if params is not None else "        -"
    return (f"{name:34s} {size}  median {latency['median_ms']:8.1f} ms  p90 {latency['p90_ms']:8.1f} ms  "
            f"({1000.0 / latency['median_ms']:6.1f} Hz)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", type=Path, default=ROOT / "config/model_tiny.yaml")
    parser.add_argument("--teacher", type=Path, default=ROOT / "config/teacher_tiny.yaml")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--lidar-points", type=int, default=30000)
    parser.add_argument("--onnx", action="store_true", help="also time the exported student in onnxruntime (CPU)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    student_config = load_model_config(args.student)
    teacher_config = load_teacher_config(args.teacher)
    hw = (student_config.image_height, student_config.image_width)
    images, ks, poses, model_ks, model_poses = rig_inputs(hw)
    k = torch.from_numpy(model_ks)[None].to(device)
    pose = torch.from_numpy(model_poses)[None].to(device)
    x = torch.randn(1, 6, 3, *hw, device=device)
    command = torch.tensor([2], device=device)
    status = torch.tensor([[5.0, 0.0, 1.0]], device=device)  # ego status: 5 m/s ahead (planner input)
    print(f"device {device}, threads {torch.get_num_threads()}, student {student_config.name}, "
          f"teacher {teacher_config.name}, batch 1, {args.repeats} repeats")

    torch.manual_seed(0)
    student = build_student(student_config).to(device).eval()
    splat = student.splat_index(k, pose)
    lat = measure_latency(lambda: student(x, None, None, command, splat, status), device, repeats=args.repeats)
    print(line("student forward (fp32)", count_parameters(student), lat))
    lat = measure_latency(lambda: student.splat_index(k, pose), device, repeats=args.repeats)
    print(line("student splat index (per calib.)", None, lat))

    teacher = build_teacher(teacher_config).to(device).eval()
    gen = np.random.default_rng(1)
    lidar = np.zeros((1, args.lidar_points, 6), dtype=np.float32)
    lidar[0, :, :2] = gen.uniform(-60, 60, (args.lidar_points, 2))
    lidar[0, :, 2] = gen.uniform(-2, 2, args.lidar_points)
    batch = {"images": x, "intrinsics": k, "cam_to_ego": pose, "command": command, "ego_status": status,
             "lidar": torch.from_numpy(lidar).to(device),
             "lidar_mask": torch.ones(1, args.lidar_points, dtype=torch.bool, device=device)}
    lat = measure_latency(lambda: teacher(batch), device, repeats=args.repeats)
    kind = "LiDAR+cam" if teacher_config.camera_branch else "LiDAR"
    print(line(f"teacher forward (fp32, {kind})", count_parameters(teacher), lat))

    predictor = Predictor(student, student_config, device)
    lat = measure_latency(lambda: predictor.predict(images, ks, poses, 2, 0), device, repeats=args.repeats)
    print(line(f"Predictor end to end ({predictor.precision})", None, lat)
          + "  preprocess+forward+decode, 1600x900 input")

    if args.onnx:
        import onnxruntime as ort

        from tinybev_ros.model.export import export_inputs, export_onnx, input_names

        cpu_model = build_student(student_config).eval()
        cpu_splat = cpu_model.splat_index(k.cpu(), pose.cpu())
        example = export_inputs(cpu_model, x.cpu(), cpu_splat, command.cpu(), status.cpu())
        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(cpu_model, example, Path(tmp) / "student.onnx")
            options = ort.SessionOptions()
            if args.threads:
                options.intra_op_num_threads = args.threads
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            feed = {name: t.numpy() for name, t in zip(input_names(cpu_model), example, strict=True)}
            lat = measure_latency(lambda: session.run(None, feed), "cpu", repeats=args.repeats)
        print(line("student onnxruntime (CPU, fp32)", None, lat))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
