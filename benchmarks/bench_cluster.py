"""Benchmark: pseudo-labels on a real Dask cluster on this machine, and what a million images
would take (issue 32, item 4).

    python benchmarks/bench_cluster.py [--images 16] [--shard-size 4] [--repeats 2]
                                       [--write docs/scaling.md] [--quick]

Every cluster is the README's (``dask scheduler --host 127.0.0.1``, ``dask worker ... --nthreads
1``: the real programs, free ports) and every labelling run is the ``pseudo-labels`` flow against
its address (``flow.task_runner=dask``, ``flow.dask_address``), in this process, against a
temporary Prefect server (``prefect_test_harness``). Measured:

- **cold start** of a worker process: ``dask worker`` started → registered; then the import of
  the flow's modules in it (what its first shard pays), and the **model load** (the classifier
  read and the labelling chain built, ``worker_cache``'s first call), each timed inside the worker;
- **Dask alone**: 300 no-op tasks through the scheduler (ms per task, all submitted at once) and
  30 one after the other (round trip);
- **shard overhead**: the flow over the same tiny images (a 2-block ViT of width 64 on ~50×37
  images) in shards of 1 and of 8 on 2 workers: (t₁ − t₈) / (shards₁ − shards₈) is what one more
  shard costs (its Prefect task run, Dask, the claims, the step's fixed work);
- **throughput** on VOC-sized images (``bench_pseudo_labels.write_dataset``: the VOC mix of sizes,
  ~500×375), DeiT-S/16 with random weights, 20 classes, saliency none, the dense CRF on: 1 worker
  process with 2 torch threads against 2 worker processes with 1 thread each, interleaved
  (A, B, A, B, ...: the machine may be shared; the ratio is what to read), warm workers (their
  model loaded by a first run on other images);
- the **driver's planning** per image (``plan_shards``: a stat and the tags of every image) on
  1,000 tiny images, the **CRF alone** per 500×375 image (the part that stays on the CPU when the
  maps are computed on a GPU) and the bytes a label PNG takes.

With ``--write`` the figures, the commands and the projection to 1M images go to that file
(docs/scaling.md); the projection's prose reads the measured numbers. ``--quick`` is a smoke run
(the 2-block ViT for the throughput too, 6 images, one repeat) of a few minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

QUICK_MODEL = ["model.name=vit_tiny_patch16_224", "model.embed_dim=64", "model.depth=2", "model.num_heads=2",
               "cam.start_block=null"]
CONFIG = ROOT / "configs" / "voc12_deit_small.yaml"
DASK = Path(sys.executable).parent / "dask"
MILLION = 1_000_000


# --- the cluster -----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group (a nanny and its worker), SIGKILL after 10 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=10)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def cluster(workers: int, logs: Path, env: dict):
    """``dask scheduler`` and ``workers`` × ``dask worker --nthreads 1`` on 127.0.0.1; yields
    (address, a distributed Client, seconds from starting the workers to all registered)."""
    from distributed import Client

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    processes = []
    try:
        log = (logs / f"scheduler-{port}.log").open("w")
        processes.append(subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                           "--no-dashboard"], stdout=log, stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True))
        client = Client(address, timeout=120, set_as_default=False)  # a default client: prefect-dask would send
        # every flow run's shards to its cluster, whatever flow.dask_address says
        started = time.perf_counter()
        for n in range(workers):
            log = (logs / f"worker-{port}-{n}.log").open("w")
            processes.append(subprocess.Popen([str(DASK), "worker", address, "--nthreads", "1", "--no-dashboard"],
                                              stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
        client.wait_for_workers(workers, timeout=300)
        yield address, client, time.perf_counter() - started
        client.close()
    finally:
        for process in reversed(processes):
            _stop(process)


# --- what runs inside a worker (pickled by value: this script is __main__) ---------------------
def _time_imports() -> float:
    started = time.perf_counter()
    import flows.pseudo_labels  # noqa: F401  (what a shard task's unpickling imports)

    return time.perf_counter() - started


def _time_model_load(config_json: str, checkpoint: str, threads: int) -> float:
    """The classifier loaded and the chain built as ``worker_cache`` does on a worker's first shard."""
    import torch

    from wsss.config import Config
    from wsss.data import open_dataset
    from wsss.models.checkpoint import load_classifier
    from wsss.refine.chain import offline_labeler

    torch.set_num_threads(threads)
    config = Config.model_validate_json(config_json)
    started = time.perf_counter()
    model, _, _ = load_classifier(checkpoint, "cpu")
    offline_labeler(model, config.cam, config.refine, open_dataset(config.data, config.data.train_split))
    return time.perf_counter() - started


def _noop(i: int) -> int:
    return i


def _cpu_seconds() -> float:
    """CPU time (user + system) of this worker process so far, all its threads."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- data, checkpoints, configs --------------------------------------------------------------
def make_case(root: Path, images: int, scale: float, model: list[str], seed: int):
    """A folder data set of ``images`` VOC-sized (× ``scale``) JPEGs (train split: all), a
    random-weights classifier.pt of ``model`` and the config; returns (config, checkpoint)."""
    from bench_pseudo_labels import write_dataset
    from wsss.config import load_config
    from wsss.data.folder import write_folder_dataset_index
    from wsss.data.voc import VOC_CLASSES
    from wsss.models.checkpoint import classifier_checkpoint, save_checkpoint
    from wsss.models.classifier import create_classifier

    dataset = write_dataset(root / "data", images, scale, seed)
    tags = {f"{i}.jpg": dataset.tag_names(i) for i in dataset.ids}
    write_folder_dataset_index(root / "data", list(VOC_CLASSES), tags, {"train": list(dataset.ids)})
    config = load_config(CONFIG, ["refine.saliency.source=none", "refine.crf.enabled=true", "model.pretrained=null",
                                  "data.format=folder", f"data.root={root / 'data'}", "data.train_split=train",
                                  f"run_dir={root / 'run'}", "train.device=cpu", "flow.examples=0",
                                  "flow.task_runner=dask", *model])
    checkpoint = root / "classifier.pt"
    save_checkpoint(checkpoint, classifier_checkpoint(create_classifier(config.model, len(VOC_CLASSES)), config.model,
                                                      list(VOC_CLASSES), []))
    return config, checkpoint


def flow_settings(config, address: str, shard_size: int, threads: int):
    return config.model_copy(update={"flow": config.flow.model_copy(update={
        "dask_address": address, "shard_size": shard_size, "torch_threads": threads})})


def label_run(config, checkpoint: Path, out: Path, ids: list[str] | None = None) -> tuple[float, dict]:
    """(seconds, summary) of one ``pseudo_labels`` flow run (over ``ids``; None: all) into a new ``out``."""
    from flows.pseudo_labels import pseudo_labels

    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    summary = pseudo_labels(config, checkpoint=checkpoint, out_dir=out, ids=ids)
    seconds = time.perf_counter() - started
    if summary["ok"] != summary["total"]:
        raise RuntimeError(f"{out}: {summary['ok']} of {summary['total']} labelled ({summary['failed']} failed)")
    return seconds, summary


# --- the measurements ------------------------------------------------------------------------
def measure_dask(client) -> dict:
    futures = client.map(_noop, range(300), pure=False)
    started = time.perf_counter()
    client.gather(futures)
    batch = (time.perf_counter() - started) / 300
    started = time.perf_counter()
    for i in range(30):
        client.submit(_noop, i, pure=False).result()
    return {"dask_ms_per_task": 1000 * batch, "dask_round_trip_ms": 1000 * (time.perf_counter() - started) / 30}


def measure_cold_start(client, config, checkpoint: Path, threads: int) -> dict:
    workers = list(client.scheduler_info(n_workers=-1)["workers"])
    imports = [client.submit(_time_imports, workers=[w], pure=False).result() for w in workers]
    loads = [client.submit(_time_model_load, config.model_dump_json(), str(checkpoint), threads, workers=[w],
                           pure=False).result() for w in workers]
    return {"import_s": statistics.mean(imports), "model_load_s": statistics.mean(loads)}


def measure_shard_overhead(tmp: Path, address: str) -> dict:
    """The flow over 32 tiny images in shards of 1 and of 8 (2 workers), twice each, interleaved."""
    config, checkpoint = make_case(tmp / "tiny", 32, 0.1, QUICK_MODEL, seed=1)
    label_run(flow_settings(config, address, 4, 1), checkpoint, tmp / "tiny-warm")  # models loaded, imports done
    times = {1: [], 8: []}
    for _ in range(2):
        for size in (1, 8):
            times[size].append(label_run(flow_settings(config, address, size, 1), checkpoint, tmp / f"tiny-{size}")[0])
    one, eight = min(times[1]), min(times[8])
    return {"shard_overhead_s": (one - eight) / (32 - 4), "tiny_s_shards_of_1": one, "tiny_s_shards_of_8": eight}


def measure_planning(tmp: Path) -> float:
    """Seconds per image of ``plan_shards`` (fingerprints and what is finished) on 1,000 tiny images."""
    from PIL import Image

    from wsss.data.folder import FolderDataset, write_folder_dataset_index
    from wsss.steps.label_plan import plan_shards

    root = tmp / "plan"
    (root / "images").mkdir(parents=True)
    for n in range(1000):
        Image.new("RGB", (8, 8)).save(root / "images" / f"{n:05d}.png")
    write_folder_dataset_index(root, ["a", "b"], {f"{n:05d}.png": ["a"] for n in range(1000)})
    dataset = FolderDataset(root)
    started = time.perf_counter()
    plan_shards(dataset, list(dataset.ids), tmp / "plan-out", 64)
    return (time.perf_counter() - started) / 1000


def measure_crf(images: int = 3) -> float:
    """CPU seconds of the pseudo-label CRF step (10 iterations, one thread) per 500×375 image: the
    benchmark's photo-like image (``bench_pseudo_labels.synthetic_image``) with a label map of
    background, two classes and an ignore band, as the chain hands it over."""
    import numpy as np

    from bench_pseudo_labels import synthetic_image
    from wsss.config import CrfConfig
    from wsss.refine.crf import start_crf_pseudo_labels

    rng = np.random.default_rng(0)
    rgb = [np.array(synthetic_image(375, 500, rng)) for _ in range(images)]
    label = np.zeros((375, 500), np.uint8)
    label[60:250, 80:260], label[150:330, 280:460], label[55:60, 75:265] = 3, 12, 255
    started = time.process_time()  # CPU time: one thread, whatever else the machine runs
    start_crf_pseudo_labels(rgb, [label] * images, CrfConfig(iterations=10, workers=1))()
    return (time.process_time() - started) / images


def measure_throughput(tmp: Path, addresses: dict[int, str], clients: dict, args) -> dict:
    """Images/s of 1 worker (2 torch threads) and 2 workers (1 thread each), interleaved, and
    the CPU time the workers spent per image (``clients``: workers → the cluster's Client)."""
    from flows.pseudo_labels import pseudo_labels

    model = QUICK_MODEL if args.quick else []
    config, checkpoint = make_case(tmp / "voc", args.images + 2, 0.5 if args.quick else 1.0, model, seed=0)
    ids = open_ids(config)
    for workers, address in addresses.items():  # warm: imports and models in every worker, on 2 other images
        pseudo_labels(flow_settings(config, address, 1, 3 - workers), checkpoint=checkpoint,
                      out_dir=tmp / f"warm-{workers}", ids=ids[-2:])
    runs, cpu = {1: [], 2: []}, {1: [], 2: []}
    for _ in range(args.repeats):
        for workers, address in addresses.items():
            client = clients[workers]
            before = sum(client.run(_cpu_seconds).values())
            seconds, _ = label_run(flow_settings(config, address, args.shard_size, 3 - workers), checkpoint,
                                   tmp / f"voc-{workers}", ids[:args.images])
            runs[workers].append(seconds)
            cpu[workers].append((sum(client.run(_cpu_seconds).values()) - before) / args.images)
            print(f"{workers} worker(s): {seconds:.1f} s for {args.images} images, {cpu[workers][-1]:.2f} CPU-s "
                  f"per image in the workers; load average {load_average()}", flush=True)
    png = statistics.mean(p.stat().st_size for p in (tmp / "voc-2").glob("[!.]*.png"))
    return {"runs": runs, "cpu": cpu, "png_bytes": png, "model": config.model.name, "images": args.images}


def open_ids(config) -> list[str]:
    from wsss.data import open_dataset

    return list(open_dataset(config.data, config.data.train_split).ids)


# --- the report ------------------------------------------------------------------------------
def processor() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def _percent(value: float) -> str:
    return f"{100 * value:.2g} %"


def report(m: dict) -> str:
    """docs/scaling.md: the measured table, how it was made, and the projection to 1M images;
    the measurements themselves at its end (a comment that ``--report-from`` reads)."""
    t = m["throughput"]
    runs, n = t["runs"], t["images"]
    rate = {w: n / statistics.median(times) for w, times in runs.items()}
    cpu = {w: statistics.median(values) for w, values in t["cpu"].items()}  # CPU-s per image, all workers
    pairs = [one / two for one, two in zip(runs[1], runs[2])]  # t(1 worker) / t(2 workers), per interleaved pair
    core_rate = 1 / cpu[2]  # images/s of one single-thread worker process with a core of its own
    need = MILLION / 86_400
    cores = MILLION * cpu[2] / 86_400
    shard_cost, crf, shard_images = m["shard_overhead_s"], m["crf_s"], 256
    lines = [
        "# Scaling: labelling on a cluster, measured and projected",
        "",
        f"Measured by `benchmarks/bench_cluster.py` on {m['date']}, {m['cores']} cores of an "
        f"**{m['processor']}** (`lscpu | grep 'Model name'`), no GPU. The machine was **shared** with another "
        f"engineer's long CPU jobs: load average {m['load_start']} at the start and {m['load_end']} at the end "
        "(1/5/15 min) on 2 cores, so these processes had a fraction of the cores and wall times are slow and noisy. "
        "Read the interleaved ratios and the CPU time per image (what the workers themselves spent, which the "
        "other jobs change much less); the projection is made from the CPU time.",
        "",
        "```bash",
        m["command"],
        "```",
        "",
        "Every cluster is the README's: `dask scheduler --host 127.0.0.1 --port P --no-dashboard` and one "
        "`dask worker tcp://127.0.0.1:P --nthreads 1 --no-dashboard` per worker process, the `pseudo-labels` flow "
        "with `flow.task_runner=dask`, `flow.dask_address=tcp://127.0.0.1:P`, against a temporary Prefect server.",
        "",
        "## Measured",
        "",
        f"Throughput: {n} VOC-sized images (`bench_pseudo_labels.write_dataset`: the VOC mix of sizes, about half "
        f"500×375), {t['model']} with random weights, 20 classes, saliency none, dense CRF on (10 iterations), "
        f"shards of {m['shard_size']}, warm workers (imports done and model loaded by a first run on 2 other "
        f"images); {m['repeats']} interleaved pairs (1 worker, 2 workers, 1, 2, ...).",
        "",
        "| worker processes × torch threads | seconds per run | images/s | CPU seconds per image (workers) |",
        "|---|---|---|---|",
    ]
    for w in (1, 2):
        lines.append(f"| {w} × {3 - w} | {', '.join(f'{x:.1f}' for x in runs[w])} | {rate[w]:.3f} | "
                     f"{', '.join(f'{x:.2f}' for x in t['cpu'][w])} |")
    lines += [
        "",
        f"2 workers against 1, wall time per interleaved pair (t₁ / t₂): {', '.join(f'{r:.2f}×' for r in pairs)}"
        + (". On a machine whose 2 cores are already busy with other jobs a second worker process finds no idle "
           "core, so the wall-time gain of a second process is not measurable here" if statistics.median(pairs) < 1.3
           else "") + ". The CPU time per image: "
        f"{cpu[1]:.2f} s in one process of 2 threads, {cpu[2]:.2f} s in single-thread processes "
        f"({cpu[1] / cpu[2]:.2f}×)"
        + (": the two threads of one process spend CPU waiting for each other when other jobs hold a core, so "
           "single-thread processes gain more than the second core" if cpu[1] / cpu[2] > 1.3 else "") + ".",
        "",
        "| what | measured |",
        "|---|---|",
        f"| a worker process, `dask worker` started → registered (2 at once) | {m['worker_start_s']:.1f} s |",
        f"| its first import of the flow's modules (torch, timm, Prefect) | {m['import_s']:.1f} s |",
        f"| its model load ({t['model']}: read, chain built) | {m['model_load_s']:.2f} s |",
        f"| Dask alone: a no-op task, 300 submitted at once | {m['dask_ms_per_task']:.1f} ms per task |",
        f"| Dask alone: a no-op task's round trip, one at a time | {m['dask_round_trip_ms']:.1f} ms |",
        f"| one more shard in a flow run (its Prefect task run, Dask, the claims, the step's fixed work) | "
        f"{1000 * shard_cost:.0f} ms |",
        f"| (from: 32 tiny images in shards of 1 / of 8, 2 workers) | {m['tiny_s_shards_of_1']:.1f} s / "
        f"{m['tiny_s_shards_of_8']:.1f} s |",
        f"| the driver's planning, per image (`plan_shards`: stat and tags) | {1e6 * m['plan_s_per_image']:.0f} µs |",
        f"| the pseudo-label CRF step alone, per 500×375 image (10 iterations, CPU time of one thread) | "
        f"{crf:.2f} s |",
        f"| a label PNG (VOC-sized) | {t['png_bytes'] / 1024:.1f} KiB |",
        "",
        "## Projection: 1M VOC-sized images on CPUs",
        "",
        f"From the measured CPU time, not measured at that size: {cpu[2]:.2f} CPU seconds per image in a "
        f"single-thread worker process, so {core_rate:.2f} images/s per core that is the worker's alone. 1M images "
        f"are {MILLION * cpu[2] / 3600:,.0f} core-hours; in 24 hours ({need:.1f} images/s) they take "
        f"**{math.ceil(cores)} cores**: {math.ceil(cores / 2)} machines like this one (2 cores, 2 worker processes) "
        f"or {math.ceil(cores / 32)} machine(s) of 32 cores, assuming throughput grows with single-thread worker "
        "processes up to one per core (measured here from 1 to 2 only; memory bandwidth on large machines is not "
        f"measured). On this shared machine as it was, at {rate[2]:.3f} images/s, it would take "
        f"{MILLION / rate[2] / 86_400:.0f} days.",
        "",
        "What the cluster adds at that size, from the measured costs:",
        "",
        f"- **Shards.** In shards of {shard_images}, one shard's fixed cost ({1000 * shard_cost:.0f} ms) is "
        f"{_percent(shard_cost / (shard_images * cpu[2]))} of its labelling on a CPU worker; 1M images are "
        f"{math.ceil(MILLION / shard_images):,} Prefect task runs, and the Dask scheduler alone passes "
        f"{1000 / m['dask_ms_per_task']:.0f} no-op tasks/s: neither is near a limit with CPU workers.",
        f"- **The driver's start.** Planning reads every image's file size, time and tags before the first shard: "
        f"{m['plan_s_per_image'] * MILLION:.0f} s for 1M images at the speed measured here on a local disk (more "
        "on a network file system).",
        f"- **Model loads.** Once per worker process ({m['model_load_s']:.1f} s, after {m['import_s']:.0f} s of "
        "imports when it starts): negligible against a day; a worker that dies and is restarted pays it again.",
        f"- **Outputs.** {t['png_bytes'] * MILLION / 2**30:.1f} GiB of label PNGs, one manifest line each, and per "
        "image a temporary file, a rename, a claim made and removed: metadata operations on the shared folder.",
        "",
        "## GPUs: unmeasured",
        "",
        "No GPU has been available to these sessions (`benchmarks/gpu_check.sh` has not run on one), so no GPU "
        "figure here is measured. What a GPU changes can be bounded from what is: the maps (forward, GETAM, PAMR) "
        "move to the GPU, the dense CRF stays on the CPU, in each worker process's own thread (the flows run it in "
        f"the worker; `refine.crf.workers` is not used there). At {crf:.2f} CPU seconds of CRF per image, one "
        f"worker process passes at most {1 / crf:.1f} images/s whatever its GPU does, so a GPU needs several "
        "worker processes and as many free cores:",
        "",
        "| GPU maps, images/s per GPU (assumed, not measured) | cores (worker processes) per GPU for the CRF | "
        "1M images on one such GPU | GPUs for 1M in 24 h |",
        "|---|---|---|---|",
    ]
    for gpu_rate in (5, 20, 50):
        lines.append(f"| {gpu_rate} | {math.ceil(gpu_rate * crf)} | {MILLION / gpu_rate / 3600:.0f} h | "
                     f"{math.ceil(need / gpu_rate)} |")
    lines += [
        "",
        "## The first bottleneck, and the setting that moves it",
        "",
        f"- **On CPU workers: the labelling itself** ({cpu[2]:.1f} CPU seconds per image). Nothing of the cluster "
        "comes close. It moves with the number of worker processes: one per core, `--nthreads 1`, and "
        "`--set flow.torch_threads=1` (two processes of several torch threads on the same cores slow each other). "
        f"The shard size only has to keep the {1000 * shard_cost:.0f} ms per shard small: `flow.shard_size` of "
        "64 to 256.",
        "- **On GPU workers: the CRF on the CPU** (the table above). It moves with **workers per GPU** (several "
        "`dask worker --nthreads 1` processes sharing a GPU, each running its CRF in its own thread, as many as "
        "there are cores to spare), or with `refine.crf.enabled=false` where the CRF's gain is not worth it.",
        "- **Then where outputs go.** Each image is a temporary file, a rename, a claim link and unlink and a "
        "manifest line on the output folder: metadata operations on one shared file system, which at GPU rates "
        "(tens of images/s per GPU, several GPUs) is the first shared resource to fill. It moves with an output "
        "folder on a fast file system close to the workers. Not measured here (one machine, a local disk). A "
        "caveat before that: `manifest.jsonl` is appended to by every worker; appends to one file from several "
        "machines are not atomic on NFS, so a multi-machine run needs its output folder on a file system with "
        "atomic appends, or one manifest per worker (not built yet).",
        "",
        f"{MEASUREMENTS} {json.dumps(m)} -->",
        "",
    ]
    return "\n".join(lines)


MEASUREMENTS = "<!-- measurements (`python benchmarks/bench_cluster.py --report-from docs/scaling.md` rebuilds this page):"


def read_measurements(path: Path) -> dict:
    """The measurements a report written by this script holds (its last comment)."""
    text = path.read_text(encoding="utf-8")
    if MEASUREMENTS not in text:
        raise ValueError(f"{path}: no measurements of benchmarks/bench_cluster.py in it")
    m = json.loads(text.split(MEASUREMENTS, 1)[1].rsplit("-->", 1)[0])
    for key in ("runs", "cpu"):  # JSON made the worker counts strings
        m["throughput"][key] = {int(k): v for k, v in m["throughput"][key].items()}
    return m


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=16, help="VOC-sized images per throughput run")
    ap.add_argument("--shard-size", type=int, default=4, help="flow.shard_size of the throughput runs")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved pairs of runs (1 worker, 2 workers)")
    ap.add_argument("--write", type=Path, default=None, help="write the report there (e.g. docs/scaling.md)")
    ap.add_argument("--quick", action="store_true", help="smoke run: the 2-block ViT, 6 images, one pair")
    ap.add_argument("--report-from", type=Path, default=None,
                    help="measure nothing: rebuild the report from the measurements a report of this script holds")
    args = ap.parse_args(argv)
    if args.report_from is not None:
        text = report(read_measurements(args.report_from))
        if args.write:
            args.write.write_text(text, encoding="utf-8")
        else:
            print(text)
        return
    if args.quick:
        args.images, args.repeats = 6, 1

    from prefect.settings import PREFECT_HOME, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    m = {"processor": processor(), "cores": os.cpu_count(), "date": time.strftime("%B %d %Y"),
         "command": " ".join(["python benchmarks/bench_cluster.py", *(argv if argv is not None else sys.argv[1:])]),
         "shard_size": args.shard_size, "repeats": args.repeats, "load_start": load_average()}
    print(f"{m['processor']}, {os.cpu_count()} cores; load average {m['load_start']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        tmp = Path(tmp)
        env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect")}
        stack.enter_context(temporary_settings({PREFECT_HOME: str(tmp / "prefect")}))
        stack.enter_context(prefect_test_harness(server_startup_timeout=180))
        from prefect.settings import PREFECT_API_URL

        env["PREFECT_API_URL"] = PREFECT_API_URL.value()
        m["plan_s_per_image"] = measure_planning(tmp)
        m["crf_s"] = measure_crf()
        print(f"planning {1e6 * m['plan_s_per_image']:.0f} µs/image; CRF {m['crf_s']:.2f} s per 500×375 image",
              flush=True)
        one, client_one, _ = stack.enter_context(cluster(1, tmp, env))
        two, client_two, m["worker_start_s"] = stack.enter_context(cluster(2, tmp, env))
        probe_config, probe_checkpoint = make_case(tmp / "probe", 2, 0.5 if args.quick else 1.0,
                                                   QUICK_MODEL if args.quick else [], seed=2)
        m.update(measure_cold_start(client_two, probe_config, probe_checkpoint, threads=1))
        m.update(measure_dask(client_two))
        print({k: round(v, 4) for k, v in m.items() if isinstance(v, float)}, flush=True)
        m.update(measure_shard_overhead(tmp, two))
        print(f"shard overhead {1000 * m['shard_overhead_s']:.0f} ms", flush=True)
        m["throughput"] = measure_throughput(tmp, {1: one, 2: two}, {1: client_one, 2: client_two}, args)
        print(m["throughput"], flush=True)
    m["load_end"] = load_average()
    text = report(m)
    print(text)
    if args.write:
        args.write.write_text(text, encoding="utf-8")
        print(f"written: {args.write}")


if __name__ == "__main__":
    main()
