"""Upload benchmark: images through the dataset service's gRPC upload vs straight to S3.

Both paths run against the same local S3 server, from the same machine, with
the same number of concurrent streams; the direct path is the baseline (what
the object store alone can take). The gRPC path also decodes every image
(validation), hashes it and records it in SQLite.

    python bench/upload.py [--streams 1,4] [--repeat 3]

Each stream count is measured: 1 is how the CLI and the SDK upload a folder (one
stream, against one PUT at a time); 4 concurrent streams against 4 threads of
PUTs load the machine.

Each path runs `--repeat` times, alternating, and the median counts. Besides the
wall time, the CPU seconds each process spent (dataset service, S3 server, this
client) are recorded: on a machine where both paths saturate the cores, the
ratio of wall times is the ratio of total CPU work.

Writes bench/results/upload.json. Target: ratio >= 0.7 for photo-sized images
(reported for each stream count).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import resource
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from trainyard.objectstore import ObjectStore
from trainyard.sample_data import digits as sample_digits
from trainyard.sample_data import png_bytes
from trainyard.sdk import Client
from trainyard.stack.local import LocalStack, StackSettings

RESULTS = Path(__file__).resolve().parent / "results" / "upload.json"


def photos(count: int, seed: int = 0) -> list[tuple[str, str, bytes]]:
    """Photo-sized (1024×768) JPEGs with smooth content and sensor-like noise (~150-300 kB each)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:768, 0:1024].astype(np.float32)
    files = []
    for i in range(count):
        base = np.stack([
            127 + 100 * np.sin(x / rng.uniform(40, 200) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(40, 200)),
            127 + 100 * np.sin((x + y) / rng.uniform(50, 300)),
            127 + 100 * np.cos(x / rng.uniform(30, 150) - y / rng.uniform(30, 150)),
        ], axis=-1)
        noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noisy).save(buffer, format="JPEG", quality=90)
        files.append((f"photo-{i:04d}.jpg", f"class-{i % 4}", buffer.getvalue()))
    return files


def digit_sized(count: int) -> list[tuple[str, str, bytes]]:
    """`count` distinct 8×8 PNGs: the 1,797 digits, then shifted copies of them."""
    images, labels = sample_digits()
    files = []
    for i in range(count):
        pixels = np.roll(images[i % len(images)], i // len(images), axis=1)
        files.append((f"digit-{i:04d}.png", str(labels[i % len(images)]), png_bytes(pixels)))
    return files


def split(files, parts):
    return [files[i::parts] for i in range(parts)]


def via_grpc(client: Client, dataset: str, files, streams: int) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        responses = list(pool.map(lambda part: client.upload_images(dataset, part), split(files, streams)))
    elapsed = time.perf_counter() - started
    stored = sum(r.stored for r in responses)
    assert stored == len(files), f"only {stored} of {len(files)} stored"
    return elapsed


def direct(objects: ObjectStore, prefix: str, files, streams: int) -> float:
    def put(part):
        for _, _, data in part:
            objects.put_bytes(f"{prefix}/{hashlib.sha256(data).hexdigest()}", data, content_type="image/jpeg")

    started = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(put, split(files, streams)))
    return time.perf_counter() - started


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measured(run, pids: dict[str, int]) -> dict:
    """Wall seconds of `run()` and the CPU seconds each process spent in it."""
    before = {name: process_cpu_seconds(pid) for name, pid in pids.items()} | {"client": own_cpu_seconds()}
    started = time.perf_counter()
    run()
    wall = time.perf_counter() - started
    after = {name: process_cpu_seconds(pid) for name, pid in pids.items()} | {"client": own_cpu_seconds()}
    return {"seconds": wall, "cpu_seconds": {name: round(after[name] - before[name], 3) for name in before}}


def summary(files, runs: list[dict]) -> dict:
    """The median run (by wall time) with throughput figures."""
    run = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    mb = sum(len(d) for _, _, d in files) / 1e6
    return {"seconds": run["seconds"], "images_per_s": len(files) / run["seconds"], "mb_per_s": mb / run["seconds"],
            "cpu_seconds": run["cpu_seconds"], "cpu_seconds_total": round(sum(run["cpu_seconds"].values()), 3),
            "all_seconds": [round(r["seconds"], 3) for r in runs]}


def figures(files, grpc: dict, direct: dict) -> dict:
    return {
        "images": len(files), "megabytes": round(sum(len(d) for _, _, d in files) / 1e6, 2),
        "grpc": grpc, "direct_s3": direct,
        "ratio": direct["seconds"] / grpc["seconds"],
        "cpu_ratio": direct["cpu_seconds_total"] / grpc["cpu_seconds_total"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1,4", help="comma-separated stream counts to measure")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--output", type=Path, help="where to write the JSON (default bench/results/)")
    args = parser.parse_args()
    stream_counts = [int(n) for n in args.streams.split(",")]
    digits = digit_sized(2000)
    photo_files = photos(200)
    results: dict = {"repeat": args.repeat, "cores": os.cpu_count(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        stack = LocalStack(StackSettings(data_dir=Path(tmp), extra_env={"TRAINYARD_LOG_LEVEL": "warning"}))
        stack.start(services=("dataset",))
        try:
            client = stack.client()
            objects = ObjectStore(stack.s3_config.endpoint, stack.s3_config.access_key, stack.s3_config.secret_key,
                                  stack.s3_config.bucket)
            pids = {"dataset_service": stack.processes["dataset"].pid, "s3_server": stack.s3.pid}
            direct(objects, "bench-direct/warm-up", digits[:50], 4)  # the S3 server's first writes
            for streams in stream_counts:
                run: dict = {"streams": streams}
                for name, files in (("digits", digits), ("photos", photo_files)):
                    direct_runs, grpc_runs = [], []
                    for i in range(args.repeat):
                        prefix = f"bench-direct/{streams}-{name}-{i}"
                        direct_runs.append(measured(partial(direct, objects, prefix, files, streams), pids))
                        dataset = client.create_dataset(f"bench-{streams}-{name}-{i}").id
                        grpc_runs.append(measured(partial(via_grpc, client, dataset, files, streams), pids))
                    run[name] = figures(files, summary(files, grpc_runs), summary(files, direct_runs))
                run["target_photo_ratio_ge_0_7"] = run["photos"]["ratio"] >= 0.7
                results["runs"].append(run)
                print(f"{streams} stream(s): digits ratio {run['digits']['ratio']:.2f}, "
                      f"photos ratio {run['photos']['ratio']:.2f} (target 0.7)")
        finally:
            stack.stop()
    output = args.output or RESULTS
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))

if __name__ == "__main__":
    main()
