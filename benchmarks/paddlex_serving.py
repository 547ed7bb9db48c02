"""`paddlex --serve` on a ReXNet export against `rexnet-plugin predict` on the
same images (docs/paddlex.md, "Serving"). Prints a markdown table.

    rexnet-plugin export ReXNet_1_0 --untrained -o /tmp/rexnet_1_0
    python benchmarks/paddlex_serving.py /tmp/rexnet_1_0

Speed does not depend on the weights. Images: ``--images FOLDER``, else 40
crops of scikit-learn's two sample photos (``agreement.photo_crops``).

- Serving: the pipeline file of ``rexnet-plugin paddlex-pipeline``, the
  unmodified ``paddlex --serve`` on a free port of 127.0.0.1; 10 untimed
  requests, then for each ``--clients`` count, ``--requests`` timed ones from
  that many threads posting base64 images with ``http.client``. Latency is
  per request, client side.
- predict: in its own process (runtimes are timed apart), what
  ``rexnet-plugin predict`` runs (``load_model``, ``predict_items``) over the
  folder, once untimed, then timed; at batch 1 (latency = time per image)
  and at the command's default batch.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PREDICT = """
import json, sys, time
from rexnet_plugin.deploy.predict import load_model, predict_items, prepare_inputs
model_dir, folder, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
items = prepare_inputs([folder])
model = load_model(model_dir)
list(predict_items(model, items, batch_size=batch))
start = time.perf_counter()
list(predict_items(model, items, batch_size=batch))
print(json.dumps({"images": len(items), "seconds": time.perf_counter() - start}))
"""


def post(port: int, image: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        start = time.perf_counter()
        conn.request("POST", "/image-classification", body=json.dumps({"image": image}),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {body[:300]!r}")
        return time.perf_counter() - start
    finally:
        conn.close()


def serve(model_dir: Path, images: list[Path], requests: int, clients: list[int]) -> dict:
    """{clients: figures} from one server."""
    from rexnet_plugin.integrations.paddlex import write_pipeline_config
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = write_pipeline_config(Path(tmp) / "pipeline.yaml", model_dir)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        paddlex = Path(sys.executable).with_name("paddlex")
        proc = subprocess.Popen([str(paddlex), "--serve", "--pipeline", str(pipeline),
                                 "--device", "cpu", "--host", "127.0.0.1", "--port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(360):
                if proc.poll() is not None:
                    raise RuntimeError("paddlex --serve exited; run it by hand to see why")
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    conn.request("GET", "/health")
                    if conn.getresponse().status == 200:
                        break
                except OSError:
                    time.sleep(0.5)
            encoded = [base64.b64encode(p.read_bytes()).decode("ascii") for p in images]
            for i in range(10):
                post(port, encoded[i % len(encoded)])
            return {n: timed_requests(port, encoded, requests, n) for n in clients}
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def timed_requests(port: int, encoded: list[str], requests: int, clients: int) -> dict:
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = sorted(pool.map(lambda i: post(port, encoded[i % len(encoded)]),
                                    range(requests)))
    wall = time.perf_counter() - start
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3
    return {"per_s": requests / wall, "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99)}


def predict(model_dir: Path, folder: Path, batch: int) -> dict:
    out = subprocess.run([sys.executable, "-c", PREDICT, str(model_dir), str(folder), str(batch)],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.splitlines()[-1])
    return {"per_s": result["images"] / result["seconds"],
            "per_image_ms": result["seconds"] / result["images"] * 1e3}


def main(argv=None) -> int:
    from rexnet_plugin.deploy.images import images_in_folder
    from rexnet_plugin.deploy.predict import DEFAULT_BATCH_SIZE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="a rexnet-plugin export folder")
    parser.add_argument("--images", type=Path, help="a folder of images (default: photo crops)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8],
                        help="concurrent clients, one timed run each (default: 1 8)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.images
        if folder is None:
            from agreement import photo_crops
            folder = photo_crops(Path(tmp) / "photos", 40)
        images = [Path(item.path) for item in images_in_folder(folder)]
        served = serve(args.model_dir, images, args.requests, args.clients)
        single = predict(args.model_dir, folder, 1)
        batched = predict(args.model_dir, folder, DEFAULT_BATCH_SIZE)
    print(f"| {len(images)} images | images/s | latency |\n|---|---|---|")
    for clients, row in served.items():
        print(f"| paddlex --serve, {clients} client(s), {args.requests} requests | "
              f"{row['per_s']:.1f} | p50 {row['p50']:.0f} ms, p90 {row['p90']:.0f} ms, "
              f"p99 {row['p99']:.0f} ms |")
    print(f"| rexnet-plugin predict --batch-size 1 | {single['per_s']:.1f} | "
          f"{single['per_image_ms']:.0f} ms per image |")
    print(f"| rexnet-plugin predict --batch-size {DEFAULT_BATCH_SIZE} | {batched['per_s']:.1f} | "
          f"- |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
